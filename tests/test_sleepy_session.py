"""Sleeping devices under the real `micropython`, one process a wake, against the real service
in an asynchronous session (`tinymetafed serve --mode async`) over a real mosquitto: wake, train,
sleep, cycle after cycle, with the service killed (kill -9) between a device's update and its
receipt, and no update lost or counted twice."""

from __future__ import annotations

import json
import os
import re
import signal

from broker_service.testing.session import stop_process
from broker_service.testing.waiting import read_text, wait_for_text
from broker_service.testing.wakes import SleepyDevice, sleepy_config

DEVICES = ("m0", "m1", "m2")
KEYS = {name: bytes([0x40 + i]) * 32 for i, name in enumerate(DEVICES)}
SETTINGS = ("recon_samples=2", "adapt_samples=3")
"""A round on 5 samples: 5 sensor wakes a training wake."""
SAMPLES = 5
STEPS = 5
ACCEPTED = re.compile(r"event=accepted round=(\d+) device=(\S+) version=(\d+)")


def serve(session, state, log, ready="event=step_open"):
    """`tinymetafed serve --mode async`: steps of two updates, the devices keyed."""
    flags = ["--mode", "async", "--buffer", "2", "--rounds", str(STEPS), "--fleet", "test"]
    flags += ["--eval-every", "100", "--eval-devices", "2", "--step-timeout", "600"]
    flags += ["--hmac-keys-file", str(session.folder / "keys.json")]
    for setting in SETTINGS:
        flags += ["--set", setting]
    return session.serve(*flags, state=state, log=log, ready=ready)


def device(session, name) -> SleepyDevice:
    folder = session.folder / name
    folder.mkdir()
    config = sleepy_config(name, session.port, folder, hmac_key=KEYS[name].hex())
    return SleepyDevice(config, folder, "micropython")


def accepted(log) -> list[tuple[str, int]]:
    """(device, version) of every update the service's log says it accepted."""
    return [(d, int(v)) for _, d, v in ACCEPTED.findall(read_text(log))]


def test_sleeping_devices_survive_a_service_kill_between_update_and_receipt(session):
    (session.folder / "keys.json").write_text(json.dumps({d: k.hex() for d, k in KEYS.items()}))
    state, log = session.folder / "state", session.folder / "serve.log"
    service = serve(session, state, log)
    fleet = {name: device(session, name) for name in DEVICES}
    m0 = fleet["m0"]
    # first cycle of every device: three updates on version 0, a step after the first two
    for name in DEVICES:
        assert fleet[name].cycle(SAMPLES) == 0, fleet[name].tail()
    wait_for_text(log, "event=step_taken round=0", 30)
    # m0 trains on the next version and is stopped after its flash write, before it publishes
    m0.sense(SAMPLES)
    m0.config["sleep"]["halt_after_write"] = True
    halted = m0.start("train")
    m0.wait_log("agent halted", 60)
    os.kill(service.pid, signal.SIGKILL)  # the service dies with m0's update not yet sent
    service.wait(10)
    halted.send_signal(signal.SIGKILL)  # and the device loses power
    stop_process(halted)
    m0.config["sleep"]["halt_after_write"] = False
    seen = len(m0.tail(10**6))
    assert m0.train() == 0  # no service: the update goes to the broker, no receipt comes
    assert "agent resent" in m0.tail(10**6)[seen:]
    service = serve(session, state, log, ready="event=started")
    assert m0.train() == 0  # the restarted service receipts it (or takes it now): never twice
    for _ in range(4):  # more wake-train-sleep cycles of the whole fleet, to the last step
        for name in DEVICES:
            assert fleet[name].cycle(SAMPLES) == 0, fleet[name].tail()
        if service.poll() is not None:
            break
    assert service.wait(120) == 0, read_text(log)[-3000:]
    pairs = accepted(log)
    assert len(pairs) == len(set(pairs)), "an update was accepted twice: %s" % pairs
    history = m0.tail(10**6)
    assert history.count("agent wake kind=train") >= 5, history
    trained = [int(v) for v in re.findall(r"agent training round=\d+ version=(\d+)", history)]
    assert 1 in trained and len(trained) >= 3, history  # version 1: the update of the kill
    assert [v for d, v in pairs if d == "m0"] == trained, (trained, pairs)
    assert "event=step_taken round=%d" % (STEPS - 1) in read_text(log)
