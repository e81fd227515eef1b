"""The asynchronous session of the aggregation service (server/buffered.py) against a real
mosquitto: retained, signed work orders whose republication is the receipt, buffered steps over
updates of old and current versions, repeats counted once, too-stale updates refused for good,
and a kill -9 (or a standby's takeover) mid-buffer that loses no accepted update."""

from __future__ import annotations

import json
import os
import queue
import signal
import threading

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from broker_service.observe.logs import EventLog
from broker_service.server import checkpoint
from broker_service.server.buffered import AsyncService
from broker_service.server.journal import Journal
from broker_service.testing.waiting import read_text, wait_for_text, wait_until
from device_agent import codec
from device_agent.auth import sign, verify
from device_agent.topics import Topics

KEYS = {name: bytes([i + 1]) * 32 for i, name in enumerate("abcde")}
N = 1120
"""The sine model's global size (TinyMetaFed's split)."""


class SleepyDevice:
    """A test device: a plain paho client that reads its retained work orders (checking the
    service's signature) and publishes signed updates built with the codec."""

    def __init__(self, port: int, device: str, fleet: str = "default"):
        self.device, self.key = device, KEYS[device]
        self.topics = Topics("tinymetafed", fleet)
        self.orders: queue.Queue[dict] = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="test-" + device, protocol=mqtt.MQTTv311
        )
        self.client.on_connect = lambda c, *a: c.subscribe(self.topics.command(device), qos=1)
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        wait_until(subscribed.is_set, 10, "%s's subscription to its work orders" % device)

    def _on_message(self, client, userdata, msg):
        payload = verify(self.key, bytes(msg.payload))
        assert payload is not None, "a work order without the service's signature"
        header, command = codec.decode_command(payload)
        self.orders.put({**command, "model_version": header.model_version})

    def order(self, timeout: float = 30.0, **want) -> dict:
        """The next work order whose fields equal `want` (earlier ones are skipped)."""
        try:
            while True:
                command = self.orders.get(timeout=timeout)
                if all(command.get(key) == value for key, value in want.items()):
                    return command
        except queue.Empty:
            raise AssertionError(
                "timed out after %gs waiting for %s's work order %s" % (timeout, self.device, want)
            ) from None

    def update(self, version: int, scale: float = 0.01) -> bytes:
        """A three-entry update computed on `version`, signed with the device's key."""
        values = [scale, -scale, 2 * scale]
        payload = codec.encode(codec.KIND_DELTA, N, [0, 1, 2], values, version, version, samples=30)
        return sign(self.key, payload)

    def send(self, message: bytes) -> None:
        """Publish an update (QoS 1) and wait for the broker's PUBACK."""
        self.client.publish(self.topics.update(self.device), message, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def devices(session, names: str) -> dict[str, SleepyDevice]:
    """Connected test devices, closed with the session."""
    out = {name: SleepyDevice(session.port, name) for name in names}
    for device in out.values():
        session.on_close(device.close)
    return out


def keys_file(tmp_path) -> str:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({d: k.hex() for d, k in KEYS.items()}))
    return str(path)


def test_steps_over_old_and_current_versions_with_receipts_repeats_and_too_stale(session, tmp_path):
    cfg = session.config(
        mode="async",
        buffer=3,
        max_staleness=1,
        rounds=3,
        step_timeout=60.0,
        eval_devices=2,
        eval_every=100,
        hmac_keys_file=keys_file(tmp_path),
    )
    log = tmp_path / "service.log"
    service = AsyncService(cfg, EventLog(path=log))
    theta0 = service.theta.copy()
    thread, result = session.background(service)
    dev = devices(session, "abcde")
    for d in dev.values():  # every keyed device gets its order, with nothing receipted yet
        first = d.order(want=True, model_version=0)
        assert first["async"] is True and "receipt" not in first
    journal = Journal(tmp_path / "state" / "journal", 0)
    dev["a"].send(dev["a"].update(0))
    assert dev["a"].order(receipt=0)["model_version"] == 0
    assert [d for d, _ in journal.replay()] == ["a"]  # journaled before the receipt went out
    dev["a"].send(dev["a"].update(0))  # the same update again: counted once, receipted again
    assert dev["a"].order(receipt=0)["model_version"] == 0
    dev["a"].send(dev["a"].update(4))  # a version not published yet
    wait_for_text(log, "reason=wrong_round", 10)
    for name in "bc":
        dev[name].send(dev[name].update(0))
    dev["d"].order(model_version=1)  # the buffer was full: step 0 taken, version 1 out
    dev["d"].send(dev["d"].update(0))  # one version old: weight 2^-0.5
    for name in "ab":
        dev[name].send(dev[name].update(1))
    dev["e"].order(model_version=2)
    dev["e"].send(dev["e"].update(0))  # two versions old, max_staleness 1
    refused = dev["e"].order(receipt=0)
    assert refused["receipt_reason"] == "too_stale" and refused["model_version"] == 2
    for name in "abc":
        dev[name].send(dev[name].update(2))
    final = dev["c"].order(want=False)
    thread.join(60)
    assert final["model_version"] == 3 and final["receipt"] == 2
    assert result["rounds"] == 3 and result["updates"] == 9, result
    text = read_text(log)
    assert text.count("event=accepted round=0 device=a ") == 1 and "event=duplicate" in text
    assert "event=accepted round=1 device=d version=0 staleness=1 weight=0.707" in text
    assert "event=step_taken round=1 updates=3 staleness=0.33" in text
    assert "device=e reason=too_stale" in text
    ckpt = checkpoint.load(tmp_path / "state" / "checkpoint.json")
    assert ckpt.round == 3 and ckpt.extra["mode"] == "async"
    assert ckpt.extra["receipts"]["e"] == [0, "too_stale"]
    assert ckpt.extra["receipts"]["d"] == [0, None] and ckpt.extra["receipts"]["a"] == [2, None]
    assert ckpt.extra["accepted"] == [["a", 2], ["b", 2], ["c", 2]]  # versions ≥ 3 − 1
    assert not np.array_equal(ckpt.theta, theta0)
    assert result["bytes_down"] > 0


def serve(session, state, log, *extra, ready=None):
    """`tinymetafed serve --mode async` in its own process: one step of three updates."""
    flags = ("--mode", "async", "--buffer", "3", "--rounds", "1", "--eval-every", "100")
    keys = ("--hmac-keys-file", str(session.folder / "keys.json"))
    return session.serve(*flags, *keys, *extra, state=state, log=log, ready=ready)


@pytest.mark.parametrize("takeover", ["restart", "standby"])
def test_a_kill_mid_buffer_loses_no_accepted_update(session, tmp_path, takeover):
    keys_file(tmp_path)
    state, a_log, b_log = tmp_path / "state", tmp_path / "a.log", tmp_path / "b.log"
    primary = serve(session, state, a_log, ready="event=step_open round=0")
    if takeover == "standby":
        standby = serve(
            session, state, b_log, "--standby", ready="event=standby_saw primary=online"
        )
    dev = devices(session, "abc")
    epoch = dev["a"].order(model_version=0)["epoch"]
    for name in "ab":
        dev[name].send(dev[name].update(0))
        dev[name].order(receipt=0)  # journaled
    os.kill(primary.pid, signal.SIGKILL)
    primary.wait(10)
    if takeover == "restart":
        standby = serve(session, state, b_log)
    # the new service replays the journal and receipts both updates again, in a new epoch
    for name in "ab":
        assert dev[name].order(receipt=0, model_version=0)["epoch"] > epoch
    dev["c"].send(dev["c"].update(0))
    assert standby.wait(60) == 0, read_text(b_log)[-3000:]
    text = read_text(b_log)
    assert text.count("event=replayed round=0 ") == 2
    assert "event=step_taken round=0 updates=3" in text
    ckpt = checkpoint.load(state / "checkpoint.json")
    assert ckpt.round == 1 and sorted(ckpt.extra["receipts"]) == ["a", "b", "c"]
