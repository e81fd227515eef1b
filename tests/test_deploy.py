"""The shipped broker, run for real: deploy/mosquitto's own config, ACL and start script
(entrypoint.sh, with deploy/check-secrets.sh) and certificates made by deploy/make-certs.sh;
only paths and ports are rewritten. Enrolled devices try every broker-side attack of the threat
model and fail; an honest device and the service still do a round over TLS.

A publish the ACL denies is acknowledged and dropped under MQTT 3.1.1, so each test asserts
what a legitimate subscriber did NOT receive, once a marker sent after the attack arrived."""

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from broker_service.observe.logs import EventLog
from broker_service.server.config import ServiceConfig
from broker_service.server.service import AggregationService
from broker_service.testing.brokers import free_port, wait_port
from broker_service.testing.session import agent_process, micropython_exe, micropython_path
from broker_service.tools.bundle import write_bundle
from broker_service.tools.enroll import (
    MONITOR_USER,
    SERVICE_USER,
    STANDBY_USER,
    enroll,
    revoke,
)
from device_agent import limits
from device_agent.topics import Topics
from tests.mqtt_helpers import ROOT

DEPLOY = ROOT / "deploy"
SERVICE_PASSWORD = "service-secret-0123456789"
FLEETS = "default other"
TOPICS = Topics("tinymetafed", "default")
OTHER = Topics("tinymetafed", "other")
WAIT = 15.0


def conf_value(conf: str, key: str) -> str:
    """The value of a global option in a mosquitto.conf text."""
    values = [line.split()[1] for line in conf.splitlines() if line.split()[:1] == [key]]
    assert len(values) == 1, key
    return values[0]


class DeployBroker:
    """deploy/mosquitto in a scratch folder, started through its own entrypoint.sh."""

    def __init__(self, folder: Path, fleets: str = FLEETS):
        self.folder = folder
        self.conf_dir = folder / "mosquitto"
        shutil.copytree(
            DEPLOY / "mosquitto", self.conf_dir, ignore=shutil.ignore_patterns("passwd")
        )
        shutil.copy(DEPLOY / "check-secrets.sh", folder / "check-secrets.sh")
        self.ca = folder / "ca" / "ca.crt"
        subprocess.run(
            [DEPLOY / "make-certs.sh", "-d", self.conf_dir / "certs", "-c", folder / "ca"]
            + ["127.0.0.1"],
            check=True,
            capture_output=True,
        )
        self.port, self.tls_port = free_port(), free_port()
        self.run_dir = folder / "run"
        self._rewrite_conf()
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "MOSQUITTO_CONFIG_DIR": str(self.conf_dir),
            "MOSQUITTO_RUN_DIR": str(self.run_dir),
            "MOSQUITTO_DATA_DIR": str(folder / "data"),
            "TINYMETAFED_SERVICE_PASSWORD": SERVICE_PASSWORD,
            "TINYMETAFED_FLEETS": fleets,
        }
        self.proc: subprocess.Popen | None = None

    def _rewrite_conf(self) -> None:
        path = self.conf_dir / "mosquitto.conf"
        conf = path.read_text()
        for old, new in (
            ("/mosquitto/run/", "%s/" % self.run_dir),
            ("/mosquitto/data/", "%s/" % (self.folder / "data")),
            ("\nlistener 1883\n", "\nlistener %d 127.0.0.1\n" % self.port),
            ("\nlistener 8883\n", "\nlistener %d 127.0.0.1\n" % self.tls_port),
        ):
            assert old in conf, old
            conf = conf.replace(old, new)
        (self.folder / "data").mkdir()
        # the scratch files are root's, not mosquitto's: keep the broker root here
        path.write_text("user root\n" + conf)

    @property
    def passwd(self) -> Path:
        return self.conf_dir / "passwd"

    def entrypoint(self, **env) -> subprocess.Popen:
        return subprocess.Popen(
            ["sh", str(self.conf_dir / "entrypoint.sh")],
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def start(self) -> "DeployBroker":
        self.proc = self.entrypoint()
        wait_port(self.port)
        wait_port(self.tls_port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.communicate(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def enroll(self, device: str, fleet: str = "default", use_case: str = "sine", **kw) -> dict:
        return enroll(device, self.passwd, "127.0.0.1", self.tls_port, use_case, fleet, **kw)


@pytest.fixture
def broker(tmp_path):
    b = DeployBroker(tmp_path)
    yield b
    b.stop()


class Peer:
    """A paho client that records what it receives and whether it was disconnected."""

    def __init__(self, port, user, password, client_id=None, ca=None, will=None):
        self.messages: list[tuple[str, bytes]] = []
        self.disconnects: list[str] = []
        self.subacks: list[int] = []
        self.connack = None
        self.cond = threading.Condition()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or user or "",
            protocol=mqtt.MQTTv311,
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        if ca:
            self.client.tls_set(ca_certs=str(ca))
        if will:
            self.client.will_set(will, b'{"state": "offline"}', qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.wait(lambda: self.connack is not None)

    def _on_connect(self, client, userdata, flags, reason, properties):
        with self.cond:
            self.connack = reason
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reasons, properties):
        with self.cond:
            self.subacks.append(mid)
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        with self.cond:
            self.disconnects.append(str(reason))
            self.cond.notify_all()

    def wait(self, predicate, timeout: float = WAIT) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), "timed out"

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, *topics: str) -> None:
        result, mid = self.client.subscribe([(t, 1) for t in topics])
        assert result == mqtt.MQTT_ERR_SUCCESS
        self.wait(lambda: mid in self.subacks)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """QoS 1; returns once the broker acknowledged it (or dropped the connection)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        deadline = time.monotonic() + WAIT
        while not info.is_published() and not self.disconnects:
            assert time.monotonic() < deadline, "no PUBACK for %s" % topic
            time.sleep(0.01)

    def topics_seen(self) -> set[str]:
        with self.cond:
            return {t for t, _ in self.messages}

    def wait_for(self, topic: str, payload: bytes) -> None:
        self.wait(lambda: (topic, payload) in self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers():
    opened: list[Peer] = []

    def open_peer(*args, **kwargs) -> Peer:
        peer = Peer(*args, **kwargs)
        opened.append(peer)
        return peer

    yield open_peer
    for peer in opened:
        peer.close()


def observer(broker, open_peer) -> Peer:
    """The service account, watching both of its fleets."""
    svc = open_peer(
        broker.port, SERVICE_USER, SERVICE_PASSWORD, will=TOPICS.base + "/service/status"
    )
    assert svc.accepted
    svc.subscribe(TOPICS.base + "/#", OTHER.base + "/#")
    return svc


def device(broker, open_peer, config, client_id=None) -> Peer:
    b = config["broker"]
    peer = open_peer(broker.tls_port, b["user"], b["password"], client_id=client_id, ca=broker.ca)
    assert peer.accepted
    return peer


def test_unknown_and_anonymous_clients_are_refused(broker, peers):
    broker.enroll("dev-a")
    broker.start()
    for port, ca in ((broker.port, None), (broker.tls_port, broker.ca)):
        assert not peers(port, "dev-a", "wrong-password", ca=ca).accepted
        assert not peers(port, "nobody", "x", ca=ca).accepted
        assert not peers(port, None, None, client_id="anon", ca=ca).accepted


def test_the_tls_port_speaks_only_tls_with_the_made_certificate(broker, peers):
    cfg = broker.enroll("dev-a")
    broker.start()
    assert device(broker, peers, cfg).accepted  # verifies the server certificate for 127.0.0.1
    # a plain MQTT CONNECT (client id "p", clean session) gets no CONNACK there
    connect = bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 1]) + b"p"
    with socket.create_connection(("127.0.0.1", broker.tls_port), timeout=WAIT) as sock:
        sock.sendall(connect)
        try:
            answer = sock.recv(4)
        except ConnectionResetError:
            answer = b""
    assert answer[:1] != b"\x20"


def test_a_device_cannot_take_over_the_service_or_another_device(broker, peers):
    a, b = broker.enroll("dev-a"), broker.enroll("dev-b")
    broker.start()
    svc = observer(broker, peers)
    dev_b = device(broker, peers, b)
    dev_b.publish(TOPICS.status("dev-b"), b"online")
    svc.wait_for(TOPICS.status("dev-b"), b"online")
    for stolen in (SERVICE_USER, "dev-b"):
        thief = device(broker, peers, a, client_id=stolen)
        thief.publish(TOPICS.update("dev-a"), b"taken as " + stolen.encode())
        svc.wait_for(TOPICS.update("dev-a"), b"taken as " + stolen.encode())
        thief.close()
    dev_b.publish(TOPICS.status("dev-b"), b"still here")
    svc.wait_for(TOPICS.status("dev-b"), b"still here")
    assert svc.disconnects == [] and dev_b.disconnects == []
    offline = [m for m in svc.messages if m[0] == TOPICS.status("dev-b") and b"offline" in m[1]]
    assert offline == []  # dev-b's last will never fired


def test_a_device_cannot_publish_outside_its_own_subtree(broker, peers):
    a = broker.enroll("dev-a")
    broker.enroll("dev-b")
    broker.enroll("dev-c", fleet="other")
    broker.start()
    svc = observer(broker, peers)
    dev_a = device(broker, peers, a)
    forged = [
        OTHER.status("dev-a"),  # join the other fleet's cohorts
        OTHER.update("dev-a"),
        OTHER.update("dev-c"),
        OTHER.model,
        TOPICS.update("dev-b"),  # another device's subtree
        TOPICS.status("dev-b"),
        TOPICS.telemetry("dev-b"),
        TOPICS.command("dev-b"),
        TOPICS.model,  # the service's own topics
        TOPICS.base + "/service/status",
        "tinymetafed/elsewhere/devices/dev-a/update",
    ]
    for topic in forged:
        dev_a.publish(topic, b"forged")
    dev_a.publish(TOPICS.update("dev-a"), b"marker")
    svc.wait_for(TOPICS.update("dev-a"), b"marker")
    assert svc.topics_seen() == {TOPICS.update("dev-a")}
    assert dev_a.disconnects == []


def test_a_device_cannot_read_another_devices_commands(broker, peers):
    a = broker.enroll("dev-a")
    broker.enroll("dev-b")
    broker.enroll("dev-c", fleet="other")
    broker.start()
    svc = observer(broker, peers)
    dev_a = device(broker, peers, a)
    dev_a.subscribe(
        TOPICS.command("dev-a"),
        TOPICS.command("dev-b"),
        TOPICS.devices + "+/cmd",
        TOPICS.devices + "#",
        OTHER.base + "/#",
        "tinymetafed/#",
        "#",
    )
    svc.publish(TOPICS.command("dev-b"), b"for dev-b")
    svc.publish(TOPICS.update("dev-b"), b"dev-b's update")
    svc.publish(OTHER.command("dev-c"), b"for dev-c")
    svc.publish(OTHER.model, b"the other fleet's model")
    svc.publish(TOPICS.command("dev-a"), b"marker")
    dev_a.wait_for(TOPICS.command("dev-a"), b"marker")
    assert dev_a.topics_seen() == {TOPICS.command("dev-a")}


def test_a_packet_over_the_limit_is_dropped_and_the_largest_model_passes(broker, peers):
    limit = int(
        conf_value((DEPLOY / "mosquitto" / "mosquitto.conf").read_text(), "max_packet_size")
    )
    a, b = broker.enroll("dev-a"), broker.enroll("d" * 64)
    broker.start()
    svc = observer(broker, peers)
    dev_a, dev_b = device(broker, peers, a), device(broker, peers, b)
    dev_b.subscribe(TOPICS.model)
    dev_a.publish(TOPICS.update("dev-a"), bytes(limit))
    dev_a.wait(lambda: dev_a.disconnects != [])
    largest = bytes(range(256)) * (limits.MAX_PAYLOAD // 256)
    dev_b.publish(TOPICS.update("d" * 64), largest)  # the longest device topic, the largest delta
    svc.wait_for(TOPICS.update("d" * 64), largest)
    svc.publish(TOPICS.model, largest, retain=True)
    dev_b.wait_for(TOPICS.model, largest)
    assert TOPICS.update("dev-a") not in svc.topics_seen()
    assert svc.disconnects == [] and dev_b.disconnects == []


def test_a_revoked_device_is_refused_after_the_broker_restarts(broker, peers):
    a = broker.enroll("dev-a")
    broker.start()
    assert device(broker, peers, a).accepted
    revoke("dev-a", broker.passwd)
    broker.restart()
    b = a["broker"]
    assert not peers(broker.tls_port, b["user"], b["password"], ca=broker.ca).accepted


def test_the_compose_health_check_passes_with_the_monitor_account(broker):
    broker.start()
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    check = compose["services"]["mosquitto"]["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL"
    command = check[1].replace("$$", "$")
    assert "-P" not in command.split() and "PASSWORD" not in command
    command = command.replace("/mosquitto/run/", "%s/" % broker.run_dir)
    command = command.replace("-p 1883", "-p %d" % broker.port)
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    monitor_pw = (broker.run_dir / "monitor" / "mosquitto_sub").read_text()
    assert monitor_pw.startswith("-u %s\n" % MONITOR_USER)
    assert (broker.run_dir / "monitor" / "mosquitto_sub").stat().st_mode & 0o077 == 0


def test_the_monitor_reads_only_sys_topics(broker, peers):
    broker.start()
    password = (broker.run_dir / "monitor" / "mosquitto_sub").read_text().split()[3]
    svc = observer(broker, peers)
    svc.publish(TOPICS.model, b"model", retain=True)
    mon = peers(broker.port, MONITOR_USER, password)
    assert mon.accepted
    mon.subscribe(TOPICS.base + "/#")
    mon.subscribe("$SYS/broker/uptime")  # handled after the first: its retained message is later
    mon.wait(lambda: "$SYS/broker/uptime" in mon.topics_seen())
    assert mon.topics_seen() == {"$SYS/broker/uptime"}
    mon.publish(TOPICS.model, b"forged by the monitor")
    svc.publish(TOPICS.command("x"), b"marker")
    svc.wait_for(TOPICS.command("x"), b"marker")
    assert (TOPICS.model, b"forged by the monitor") not in svc.messages


def test_the_standby_account_reads_only_the_service_status(broker, peers):
    standby_password = "standby-" + SERVICE_PASSWORD
    broker.env["TINYMETAFED_STANDBY_PASSWORD"] = standby_password
    broker.start()
    svc = observer(broker, peers)
    status = TOPICS.base + "/service/status"
    svc.publish(status, b'{"state": "online"}', retain=True)
    svc.publish(TOPICS.model, b"model", retain=True)
    watch = peers(broker.port, STANDBY_USER, standby_password)
    assert watch.accepted
    watch.subscribe(TOPICS.base + "/#")  # granted only where the ACL lets it read
    watch.subscribe(status)
    watch.wait(lambda: status in watch.topics_seen())
    assert watch.topics_seen() == {status}
    watch.publish(status, b'{"state": "offline"}', retain=True)
    svc.publish(TOPICS.command("x"), b"marker")
    svc.wait_for(TOPICS.command("x"), b"marker")
    assert (status, b'{"state": "offline"}') not in svc.messages
    assert not svc.disconnects  # its own client id: the service keeps its connection


def test_without_a_standby_password_there_is_no_standby_account(broker, peers):
    broker.start()
    watch = peers(broker.port, STANDBY_USER, "standby-" + SERVICE_PASSWORD)
    assert not watch.accepted


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda b: b.env.update(TINYMETAFED_SERVICE_PASSWORD="change-me-service"), "placeholder"),
        (lambda b: b.env.update(TINYMETAFED_STANDBY_PASSWORD="change-me-standby"), "placeholder"),
        (lambda b: b.env.pop("TINYMETAFED_SERVICE_PASSWORD"), "is not set"),
        (lambda b: b.passwd.write_text("%s:$7$x\n" % SERVICE_USER), "reserved account"),
        (lambda b: (b.conf_dir / "acl").write_text("pattern write #\n"), "pattern lines"),
        (lambda b: b.env.update(TINYMETAFED_FLEETS="default #"), "fleet '#'"),
        (lambda b: (b.conf_dir / "certs" / "server.key").unlink(), "make-certs.sh"),
    ],
)
def test_the_start_script_refuses_unsafe_settings(broker, setup, message):
    setup(broker)
    proc = broker.entrypoint()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0 and message in out, out


def test_full_round_with_an_enrolled_micropython_agent_over_tls(broker, tmp_path):
    config = broker.enroll("board-1", use_case="occupancy", ca_file=str(broker.ca))
    config = {**config, "max_rounds": 1, "data": {"kind": "synthetic", "seed": 3}}
    broker.start()
    board = tmp_path / "board"
    write_bundle(board, config, mpy=False)  # copies the CA; the board verifies the broker
    assert (board / broker.ca.name).exists()
    env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
    env["MICROPYPATH"] = "%s:%s:.frozen" % (board, micropython_path().split(":")[1])  # ssl
    agent = subprocess.Popen(
        [micropython_exe(), "-X", "heapsize=256K", "main.py"],
        cwd=board,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        summary = AggregationService(
            service_config(broker, tmp_path, "occupancy"), EventLog(quiet=True)
        ).run()
        out, _ = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert summary["rounds"] == 1 and summary["updates"] == 1, out
    assert "agent round" in out


def test_a_cpython_agent_verifying_the_broker_certificate_does_a_round(broker, tmp_path):
    config = broker.enroll("gateway-1")
    config["broker"]["ca_file"] = str(broker.ca)
    config["data"] = {"kind": "synthetic", "seed": 1}
    broker.start()
    agent = agent_process(config, tmp_path, "cpython")
    try:
        summary = AggregationService(
            service_config(broker, tmp_path, "sine"), EventLog(quiet=True)
        ).run()
    finally:
        agent.terminate()
        agent.wait(10)
    assert summary["rounds"] == 1 and summary["updates"] == 1


def service_config(broker, tmp_path, use_case) -> ServiceConfig:
    """The service as the stack runs it: plain MQTT on the internal listener."""
    return ServiceConfig(
        broker="mqtt://127.0.0.1:%d" % broker.port,
        username=SERVICE_USER,
        password=SERVICE_PASSWORD,
        use_case=use_case,
        data_dir=os.environ.get("TINYMETAFED_DATA", str(ROOT.parent / "shared" / "data")),
        rounds=1,
        cohort=1,
        state_dir=str(tmp_path / "state"),
        eval_devices=2,
        round_timeout=30.0,
    )
