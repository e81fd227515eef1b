"""Downlink integrity over a real mosquitto, under a real `micropython` (256 KB heap) and CPython:
a keyed device refuses what a hostile broker injects (an oversized retained model, forged,
unsigned and replayed commands and models, out-of-range settings) and still completes the signed
rounds; the service signs for keyed devices; a board's TLS refuses a broker its CA did not sign.
"""

import json
import subprocess

import pytest

from broker_service.server.signing import DownlinkSigner
from broker_service.testing.brokers import Mosquitto, free_port, wait_port
from broker_service.testing.session import agent_process
from broker_service.testing.waiting import wait_for_text
from device_agent import codec
from device_agent.auth import sign, verify
from device_agent.model import Plan
from device_agent.specs import spec_for
from tests.mpy import downlink_check as dc
from tests.mqtt_helpers import Driver
from tests.test_tls import make_certs

KEY = dc.KEY
EPOCH = dc.EPOCH
SETTINGS = {"recon_samples": 5, "adapt_samples": 10, "top_p": 20.0, "values": "f16", "seed": 2}
OVERSIZED = 300 * 1024  # more than the whole 256 KB heap of the micropython agent


def agent_config(device, port, **extra):
    cfg = {"device_id": device, "fleet": "test", "broker": {"host": "127.0.0.1", "port": port}}
    cfg.update(extra)
    return cfg


def finish(proc, timeout=60):
    try:
        assert proc.wait(timeout) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


class Attacker:
    """The test's broker-side peer: publishes the service's genuine, signed messages (it holds
    the device's key) and the forgeries and replays a hostile broker would."""

    def __init__(self, driver, device):
        self.driver = driver
        self.device = device
        self.signer = DownlinkSigner({device: KEY}, EPOCH)
        self.n = Plan(spec_for("sine")).n_global

    def publish(self, topic, payload, retain=False):
        self.driver.client.publish(topic, bytes(payload), qos=1, retain=retain).wait_for_publish()

    def model(self, version, scale=1.0):
        """Publish a retained model (scale != 1: a forged one of the same version)."""
        payload = dc.model_payload(self.n, version, scale)
        self.publish(self.driver.topics.model, payload, retain=True)
        return payload

    def command(self, version, model, message=None, **fields):
        """Publish a signed round command for `model` (or a given message); returns it."""
        cmd = dict(SETTINGS, round=version, version=version, **fields)
        if message is None:
            message = self.signer.command(self.device, cmd, version, version, model)
        self.publish(self.driver.topics.command(self.device), message)
        return message

    def update(self, version):
        """The next update of the device: signed, for this round and version."""
        header, _, _ = codec.decode(verify(KEY, self.driver.get(self.device, "update")))
        assert (header.round, header.model_version) == (version, version)
        return json.loads(self.driver.get(self.device, "telemetry"))


@pytest.mark.parametrize("impl", ["micropython", "cpython"])
def test_a_keyed_device_refuses_what_a_hostile_broker_injects(impl, mosquitto, tmp_path):
    device = impl[:2] + "-keyed"
    driver = Driver(mosquitto.port)
    attacker = Attacker(driver, device)
    # waiting on the broker: a retained model larger than the device's heap
    attacker.publish(driver.topics.model, bytes(OVERSIZED), retain=True)
    proc = agent_process(
        agent_config(device, mosquitto.port, hmac_key=KEY.hex()), tmp_path, impl, rounds=3
    )
    log = tmp_path / (device + ".log")
    try:
        driver.wait_status(device, "online")
        m1 = dc.model_payload(attacker.n, 1)
        attacker.command(1, m1)  # invited: it fetches the retained model, skips it unread...
        wait_for_text(log, "reason=oversized", 60)
        attacker.publish(driver.topics.model, m1, retain=True)  # ...and takes the genuine one
        first = attacker.update(1)
        m2 = attacker.model(2)
        attacker.command(2, m2)
        attacker.update(2)
        # replays of genuine older messages, forgeries, a signed but out-of-range setting
        attacker.model(1)  # not fetched: no command asks for it
        attacker.command(1, m1)
        plain = codec.encode_command(dict(SETTINGS, round=3, version=3), 3, 3)
        attacker.command(3, None, sign(dc.OTHER_KEY, plain))
        attacker.command(3, None, plain)
        attacker.command(3, m2, top_p=0.0)
        # the service's command for version 3: the fetch finds the replayed version 1, then a
        # forged version 3; neither is trained on, and the round is refused
        genuine = dc.model_payload(attacker.n, 3)
        attacker.command(3, genuine)
        wait_for_text(log, "reason=rollback what=model", 60)
        attacker.model(3, scale=3.0)
        refused = json.loads(driver.get(device, "telemetry"))
        # the fetch timed out holding version 2 only
        assert refused == {"round": 3, "version": 3, "error": "stale_version", "device": device}
        attacker.model(3)
        attacker.command(3, genuine)  # asked again: the same command, not a rollback
        last = attacker.update(3)
        finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        driver.close()
    assert last["rejected"] == {
        "model:oversized": 1,
        "model:rollback": 1,
        "command:rollback": 1,
        "command:bad_signature": 1,
        "command:unsigned": 1,
        "command:bad_setting": 1,
        "model:bad_digest": 1,
        "command:stale_version": 1,
    }
    if impl == "micropython":  # the heap a 256 KB board has left, before and after the attacks
        print(
            "micropython heap: round 1 free %d peak %d; round 3 free %d peak %d"
            % (first["heap_free"], first["heap_peak"], last["heap_free"], last["heap_peak"])
        )
        assert last["heap_free"] > 100 * 1024 and last["heap_peak"] <= 256 * 1024


def test_signed_session_with_the_service(session, tmp_path):
    """The service signs each keyed device's commands; a micropython and a CPython device with
    keys complete every round, refusing nothing."""
    keys = {"mp-signed": "5a" * 32, "py-signed": "a5" * 32}
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    for device, impl in (("mp-signed", "micropython"), ("py-signed", "cpython")):
        session.agent({"device_id": device, "hmac_key": keys[device]}, impl)
    cfg = session.config(
        rounds=3,
        cohort=2,
        eval_devices=2,
        round_timeout=30.0,
        wait_for_devices=30.0,
        hmac_keys_file=str(tmp_path / "keys.json"),
    )
    summary = session.service(cfg, tmp_path / "service.log").run()
    session.close()
    assert summary["rounds"] == 3 and summary["updates"] == 6 and summary["rejected"] == {}
    for device in keys:
        text = (tmp_path / (device + ".log")).read_text()
        assert text.count("agent round ") == 3 and "rejected" not in text
    assert "5a" * 32 not in (tmp_path / "service.log").read_text()


# -- TLS on the device --


def issue(folder, ca, name, san):
    """A server key and certificate for `san`, signed by the CA in folder/ca (openssl)."""

    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl(
        *(
            "req -newkey rsa:2048 -nodes -subj /CN=%s -keyout %s.key -out %s.csr" % ((name,) * 3)
        ).split()
    )
    (folder / ("%s.ext" % name)).write_text("subjectAltName=%s\n" % san)
    ssl(
        *(
            "x509 -req -in %s.csr -CA %s/ca.crt -CAkey %s/ca.key -CAcreateserial -days 2 "
            "-extfile %s.ext -out %s.crt" % (name, ca, ca, name, name)
        ).split()
    )


@pytest.fixture
def tls_broker(tmp_path):
    """mosquitto with a plain listener (the test's driver) and three TLS listeners: a
    certificate from the devices' CA, one from another CA, and one of the devices' CA for
    another host name. Yields (broker, {listener: port}, devices' CA folder)."""
    for ca in ("ours", "theirs"):
        (tmp_path / ca).mkdir()
        make_certs(tmp_path / ca)
    issue(tmp_path, "ours", "elsewhere", "DNS:broker.elsewhere.example")
    ports = {"good": free_port(), "other_ca": free_port(), "other_name": free_port()}
    listeners = [
        ("good", tmp_path / "ours" / "server"),
        ("other_ca", tmp_path / "theirs" / "server"),
        ("other_name", tmp_path / "elsewhere"),
    ]
    extra = "".join(
        "listener %d 127.0.0.1\ncertfile %s.crt\nkeyfile %s.key\n" % (ports[name], stem, stem)
        for name, stem in listeners
    )
    broker = Mosquitto(tmp_path, extra=extra).start()
    for port in ports.values():
        wait_port(port)
    yield broker, ports, tmp_path / "ours"
    broker.stop()


REFUSALS = {
    "micropython": {  # mbedtls, as the boards' ports have it
        "other_ca": "not correctly signed by the trusted CA",
        "other_name": "does not match with the expected CN",
    },
    "cpython": {
        "other_ca": "unable to get local issuer certificate",
        "other_name": "IP address mismatch",
    },
}
"""What each runtime says when it refuses the broker's certificate, by listener."""


@pytest.mark.parametrize("impl", ["micropython", "cpython"])
def test_tls_verifies_the_brokers_certificate_and_name(impl, tls_broker, tmp_path):
    broker, ports, ours = tls_broker
    ca = ours / "ca.crt"
    if impl == "cpython":  # a board's DER file works on CPython too
        subprocess.run(
            ["openssl", "x509", "-in", ca, "-outform", "der", "-out", ours / "ca.der"], check=True
        )
        ca = ours / "ca.der"
    driver = Driver(broker.port)
    procs = {}
    for name, port in ports.items():
        tls = {"host": "127.0.0.1", "port": port, "ssl": True, "ca_file": str(ca)}
        device = "%s-%s" % (impl[:2], name.replace("_", "-"))
        cfg = agent_config(device, port, broker=tls)
        procs[name] = (device, agent_process(cfg, tmp_path, impl, rounds=1))
    try:
        device, proc = procs["good"]
        driver.wait_status(device, "online")
        model = dc.model_payload(Plan(spec_for("sine")).n_global, 1)
        driver.client.publish(driver.topics.model, model, qos=1, retain=True).wait_for_publish()
        driver.command(device, dict(SETTINGS, round=0, version=1))
        header, _, _ = codec.decode(driver.get(device, "update"))
        telemetry = json.loads(driver.get(device, "telemetry"))
        finish(proc)
        for name, why in REFUSALS[impl].items():
            device, proc = procs[name]
            text = wait_for_text(tmp_path / (device + ".log"), "agent disconnected", 60)
            assert why in text and "agent connected" not in text, text
    finally:
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        driver.close()
    assert header.model_version == 1
    if impl == "micropython":
        print(
            "micropython heap over TLS: free %d peak %d"
            % (telemetry["heap_free"], telemetry["heap_peak"])
        )
