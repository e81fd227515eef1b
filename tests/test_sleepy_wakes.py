"""A sleeping device's wakes under the real `micropython` against a real mosquitto, the test
playing the service (docs/protocol.md, "Asynchronous sessions"): retained signed work orders and
the retained model, the receipt as the work order republished with `receipt`."""

from __future__ import annotations

import json
import queue
import signal
import threading

import numpy as np
import paho.mqtt.client as mqtt

from broker_service.core import fastcodec
from broker_service.server.signing import DownlinkSigner
from broker_service.testing.waiting import wait_until
from broker_service.testing.wakes import SleepyDevice, sleepy_config
from device_agent import auth, codec, state
from device_agent.model import Plan
from device_agent.specs import spec_for
from device_agent.topics import Topics

KEY = bytes(range(32))
ORDER = {"async": True, "recon_samples": 2, "adapt_samples": 3, "values": "f16", "top_p": 20.0}
"""A work order's settings: a round on 5 samples."""
SAMPLES = 5
PLAN = Plan(spec_for("sine"))


class Desk:
    """The service's side of one device's asynchronous session, in a few lines of paho: the
    retained model and work order (signed when the device has a key), the device's updates."""

    def __init__(self, port: int, device: str, key: bytes | None = None):
        self.topics = Topics("tinymetafed", "test")
        self.device = device
        self.key = key
        self.signer = DownlinkSigner({device: key} if key else None, epoch=1000)
        self.updates: queue.Queue[bytes] = queue.Queue()
        self.telemetry: queue.Queue[dict] = queue.Queue()
        self.model = b""
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="desk")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(self.topics.update(device), 1), (self.topics.telemetry(device), 0)])
        self.client.loop_start()
        wait_until(subscribed.is_set, 10, "the desk's subscriptions")

    def _on_message(self, client, userdata, msg):
        if msg.topic.endswith("/update"):
            self.updates.put(bytes(msg.payload))
        else:
            self.telemetry.put(json.loads(msg.payload))

    def _retain(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1, retain=True).wait_for_publish()

    def publish_model(self, version: int) -> None:
        theta = np.random.default_rng(version).normal(0, 0.1, PLAN.n_global).astype(np.float32)
        self.model = fastcodec.encode_model(theta, version)
        self._retain(self.topics.model, self.model)

    def order(self, version: int, receipt: int | None = None, **fields) -> None:
        """The retained work order for `version` (with the receipt for `receipt`)."""
        cmd = {**ORDER, "round": version, "version": version, "want": True, **fields}
        if receipt is not None:
            cmd["receipt"] = receipt
        payload = self.signer.command(self.device, cmd, version, version, self.model)
        self._retain(self.topics.command(self.device), payload)

    def raw_order(self, payload: bytes) -> None:
        self._retain(self.topics.command(self.device), payload)

    def update(self, timeout: float = 60.0) -> bytes:
        try:
            return self.updates.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("timed out after %gs waiting for an update" % timeout) from None

    def version_of(self, message: bytes) -> int:
        payload = auth.verify(self.key, message) if self.key else message
        assert payload is not None, "the update's tag does not verify"
        header, idx, _ = codec.decode(payload)
        assert header.kind == codec.KIND_DELTA and header.n == PLAN.n_global and len(idx)
        return header.model_version

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def held_update(config: dict) -> bytes | None:
    """The unacknowledged update in the device's flash state."""
    st, why = state.load(config["sleep"]["state"], PLAN, 65536)
    assert why is None, why
    return state.update_bytes(st)


def test_keyed_device_wake_train_sleep_cycles(mosquitto, tmp_path):
    """Seven wake-train-sleep cycles of a keyed device, each a new micropython process: every
    version's update arrives once, or again with the same bytes when its receipt was lost or
    the device was killed after its flash write; forged receipts are refused."""
    config = sleepy_config(
        "sleepy-1",
        mosquitto.port,
        tmp_path,
        hmac_key=KEY.hex(),
        sleep={"order_ms": 1500, "receipt_ms": 1500, "ring": 8},
    )
    device = SleepyDevice(config, tmp_path, "micropython")
    desk = Desk(mosquitto.port, "sleepy-1", KEY)
    received: dict[int, bytes] = {}

    def train_and_receipt(version: int, receipt: bool = True) -> bytes:
        proc = device.start("train")
        try:
            message = desk.update()
            assert desk.version_of(message) == version
            if receipt:
                desk.order(version, receipt=version)
            assert proc.wait(60) == 0, device.tail()
        finally:
            if proc.poll() is None:
                proc.kill()
        return message

    try:
        for version in (1, 2, 3):  # plain cycles: sense, order, train, receipt
            device.sense(SAMPLES)
            desk.publish_model(version)
            desk.order(version, receipt=version - 1 if version > 1 else None)
            message = train_and_receipt(version, receipt=version != 3)
            assert version not in received
            received[version] = message
        log = device.tail(100000)
        assert (
            log.count("agent trained") == 3 and "agent receipt reason=journalled version=2" in log
        )
        assert "agent receipt reason=journalled version=3" not in log
        # version 3's receipt was lost: the next wake re-sends the same bytes and does not train
        assert held_update(config) == received[3]
        assert train_and_receipt(3) == received[3]
        assert "agent resent bytes=%d version=3" % len(received[3]) in device.tail(10**9)
        assert device.tail(100000).count("agent trained") == 3

        # killed after its flash write, before publishing: the next wake re-sends that update
        device.sense(SAMPLES)
        desk.publish_model(4)
        desk.order(4, receipt=3)
        device.config["sleep"]["halt_after_write"] = True
        before = len(device.tail(10**9))
        proc = device.start("train")
        try:
            device.wait_log("agent halted version=4", after=before)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        device.config["sleep"]["halt_after_write"] = False
        assert desk.updates.empty()
        kept = held_update(config)
        assert kept is not None and desk.version_of(kept) == 4

        # forged receipts (unsigned, a wrong key's tag) are refused; the update stays kept
        forged = {**ORDER, "round": 4, "version": 4, "want": True, "receipt": 4, "epoch": 1000}
        forged["model_sha256"] = auth.digest(desk.model).hex()
        plain = codec.encode_command(forged, 4, 4)
        for payload, reason in (
            (bytes(plain), "unsigned"),
            (auth.sign(bytes(32), plain), "bad_signature"),
        ):
            before = len(device.tail(10**9))
            desk.raw_order(payload)
            assert device.train() == 0, device.tail()
            assert "reason=%s" % reason in device.tail(10**9)[before:]
            assert held_update(config) == kept
        assert desk.updates.empty()
        desk.order(4)  # the genuine order again, without a receipt
        assert train_and_receipt(4) == kept
        received[4] = kept

        for version in (5, 6, 7):
            device.sense(SAMPLES)
            desk.publish_model(version)
            desk.order(version, receipt=version - 1)
            received[version] = train_and_receipt(version)
        assert held_update(config) is not None  # the last receipt came after the write...
        desk.order(8, receipt=7, want=False)  # ...and is recorded by the next wake's write
        assert device.train() == 0
        assert held_update(config) is None
        assert desk.updates.empty()  # no update lost, none duplicated
        assert sorted(received) == list(range(1, 8))
        assert len(set(received.values())) == 7
        log = device.tail(10**9)
        assert log.count("agent trained") == 6 and log.count("agent halted") == 1
        assert log.count("agent state_fresh reason=missing") == 1
        wait_until(lambda: not desk.telemetry.empty(), 10, "telemetry")
        docs = []
        while not desk.telemetry.empty():
            docs.append(desk.telemetry.get())
        trained = [d for d in docs if "compute_ms" in d]
        assert trained and all(d["sensor_wakes"] >= 0 for d in docs)
        assert trained[0]["sensor_wakes"] == SAMPLES and trained[0]["wakes"] == 1
    finally:
        desk.close()


def test_unkeyed_device_under_cpython(mosquitto, tmp_path):
    """The same program under CPython, unkeyed (plain work orders): two cycles, a lost receipt
    re-sent, and a ring that had too few samples for the order."""
    config = sleepy_config("sleepy-py", mosquitto.port, tmp_path, sleep={"receipt_ms": 1000})
    device = SleepyDevice(config, tmp_path, "cpython")
    desk = Desk(mosquitto.port, "sleepy-py")
    try:
        device.sense(SAMPLES - 1)
        desk.publish_model(1)
        desk.order(1)
        assert device.train() == 0
        assert "agent idle have=4 need=5 why=samples" in device.tail()
        device.sense(1)
        assert device.train() == 0  # no receipt this time
        first = desk.update()
        assert desk.version_of(first) == 1
        proc = device.start("train")
        assert desk.update() == first  # re-sent, the same bytes
        desk.publish_model(2)
        desk.order(2, receipt=1)
        assert proc.wait(60) == 0
        device.sense(SAMPLES)
        assert device.train() == 0
        assert desk.version_of(desk.update()) == 2
        assert desk.updates.empty()
        st, why = state.load(config["sleep"]["state"], PLAN, 65536)
        assert why is None and st.last_trained == 2 and st.ring_seen == 2 * SAMPLES
        assert st.header is not None and st.header.model_version == 2
    finally:
        desk.close()
