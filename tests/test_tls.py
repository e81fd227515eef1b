"""TLS end to end: a CA and certificates made by the test, mosquitto with a TLS listener and
a password file, the service and an agent connecting over mqtts:// with username/password."""

import subprocess

from broker_service.observe.logs import EventLog
from broker_service.server.config import ServiceConfig
from broker_service.server.service import AggregationService
from broker_service.testing.brokers import Mosquitto, free_port
from broker_service.testing.session import agent_process
from broker_service.tools.enroll import add_broker_user


def make_certs(folder):
    """A CA, and a server certificate for 127.0.0.1 signed by it (openssl)."""

    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=tinymetafed test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    ssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    )


def test_service_and_agent_over_tls_with_passwords(tmp_path):
    make_certs(tmp_path)
    add_broker_user(tmp_path / "passwd", "svc", "svc-pw")
    add_broker_user(tmp_path / "passwd", "tls-dev", "dev-pw")
    port = free_port()
    broker = Mosquitto(tmp_path, port)
    broker.conf.write_text(
        "user root\nallow_anonymous false\npassword_file %s/passwd\nlistener %d 127.0.0.1\n"
        "cafile %s/ca.crt\ncertfile %s/server.crt\nkeyfile %s/server.key\n"
        % (tmp_path, port, tmp_path, tmp_path, tmp_path)
    )
    broker.start()
    agent = agent_process(
        {
            "device_id": "tls-dev",
            "use_case": "sine",
            "broker": {
                "host": "127.0.0.1",
                "port": port,
                "user": "tls-dev",
                "password": "dev-pw",
                "ssl": True,
                "ca_file": str(tmp_path / "ca.crt"),
            },
        },
        tmp_path,
        "cpython",
    )
    try:
        cfg = ServiceConfig(
            broker="mqtts://127.0.0.1:%d" % port,
            username="svc",
            password="svc-pw",
            ca_file=str(tmp_path / "ca.crt"),
            use_case="sine",
            rounds=2,
            cohort=1,
            eval_devices=2,
            state_dir=str(tmp_path / "state"),
            round_timeout=20.0,
        )
        summary = AggregationService(cfg, EventLog(path=tmp_path / "s.log")).run()
    finally:
        agent.terminate()
        agent.wait(10)
        broker.stop()
    assert summary["rounds"] == 2 and summary["updates"] == 2
    assert "svc-pw" not in (tmp_path / "s.log").read_text()
