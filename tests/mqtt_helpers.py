"""Test-side MQTT peer: a minimal round driver (what the service does). Agents, the service and
the broker are started by broker_service.testing.session."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from broker_service.core import fastcodec
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
