"""One hostile device against the service, over a real mosquitto: every attack of the service
side (issue 12) is tried with only the device's own topics, fails, and the honest fleet's
session completes."""

from __future__ import annotations

import json
import time

import numpy as np
import paho.mqtt.client as mqtt

from broker_service.observe.logs import EventLog
from broker_service.server import checkpoint
from broker_service.server.config import ServiceConfig
from broker_service.server.mqtt import Event
from broker_service.server.rounds import RoundLedger
from broker_service.server.service import AggregationService
from broker_service.sim.attacks import BOMBS, HUGE, HostileRunner, forged_delta
from broker_service.usecases.sine import SineUseCase
from device_agent import codec, reasons
from device_agent.topics import Topics

TOPICS = Topics("tinymetafed", "default")


def config(port: int, tmp_path, **kw) -> ServiceConfig:
    base = dict(
        broker="mqtt://127.0.0.1:%d" % port,
        use_case="sine",
        rounds=3,
        cohort=3,
        state_dir=str(tmp_path / "state"),
        round_timeout=10.0,
        wait_for_devices=20.0,
        eval_every=100,
        eval_devices=2,
    )
    base.update(kw)
    return ServiceConfig(**base)


class Publisher:
    """A bare MQTT client that publishes on one device's topics (what its ACL allows)."""

    def __init__(self, port: int):
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="hostile-raw", protocol=mqtt.MQTTv311
        )
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(check, timeout: float = 25.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_retained_hostile_messages_cannot_stop_the_service_nor_its_restart(session, tmp_path):
    """Retained bombs are delivered on every (re)start; each is refused and counted."""
    huge_delta = forged_delta({"round": 0, "version": 0}, 3, range(3), [HUGE] * 3, 30)
    raw = Publisher(session.port)
    session.on_close(raw.close)
    retained = {
        "evil-deep/status": BOMBS["status_deep"][1],
        "evil-big/status": BOMBS["status_huge"][1],
        "evil-num/status": BOMBS["status_number"][1],
        "bad id/status": b'{"state": "online"}',
        "evil-deep/telemetry": BOMBS["telemetry_deep"][1],
        "evil-deep/update": huge_delta,
    }
    for leaf, payload in retained.items():
        raw.send(TOPICS.devices + leaf, payload, retain=True)
    fleet = session.fleet(SineUseCase(fleet_size=3), 3)
    trust = {"trust_rate": 0.02}  # on (the default), so that there is trust to keep
    first = session.service(config(session.port, tmp_path, rounds=2, settings=trust))
    summary = first.run()
    again = session.service(config(session.port, tmp_path, rounds=4, settings=trust))
    trusted = (first.admission.bounds.trust, again.admission.bounds.trust)
    assert trusted[1].trust == trusted[0].trust and len(trusted[1].trust) == 3  # kept
    assert trusted[1].updates == trusted[0].updates  # and each device's probation count
    for device, history in trusted[0].histories.items():
        np.testing.assert_array_equal(trusted[1].histories[device][0], history[0])
    resumed = again.run()
    session.close()
    assert summary["rounds"] == 2 and resumed["rounds"] == 4 and resumed["updates"] == 12
    assert len(again.admission.bounds.norms) == 12  # the first session's 6 norms were kept
    started = float(np.linalg.norm(first.admission.bounds.reference))
    assert started > 0 and again.admission.bounds.reference == started  # θ_g's first length
    for reason in (
        reasons.TOO_DEEP,
        reasons.OVERSIZED,
        reasons.BAD_NUMBER,
        reasons.BAD_DEVICE_ID,
        reasons.RETAINED,
    ):
        assert summary["rejected"].get(reason, 0) >= 1, reason
        assert resumed["rejected"][reason] > summary["rejected"][reason], reason  # again
    assert sorted(again.fleet.online()) == sorted(fleet.agents[i].device_id for i in range(3))
    assert np.all(np.isfinite(checkpoint.load(tmp_path / "state" / "checkpoint.json").theta))


def test_hostile_updates_are_refused_or_bounded_and_the_session_completes(session, tmp_path):
    use_case = SineUseCase(fleet_size=5)
    fleet = session.fleet(use_case, 5, start=False)
    hostile = fleet.agents[0]
    hostile.round_runner = HostileRunner(use_case, hostile.round_runner.net, 0)
    fleet.start()
    steps: list[tuple[int, float, float]] = []
    service = session.service(
        config(session.port, tmp_path, rounds=8, cohort=5),
        tmp_path / "s.log",
        progress=lambda report: steps.append(
            (
                report.round,
                float(np.linalg.norm(service.theta.astype(np.float64) - before[-1])),
                report.outer_step * service.admission.bounds.clip_bound(before[-1]),
            )
        ),
    )
    before = [service.theta.astype(np.float64)]
    original = service._aggregate

    def remember_theta(ledger):
        before.append(service.theta.astype(np.float64))
        return original(ledger)

    service._aggregate = remember_theta
    summary = service.run()
    session.close()
    log = (tmp_path / "s.log").read_text()
    name = hostile.device_id
    assert summary["rounds"] == 8
    assert summary["rejected"][reasons.NORM_BOUND] >= 1  # the 3e38 update, round 0
    assert summary["rejected"][reasons.BAD_VALUES] >= 1  # the NaN update, round 2
    assert summary["rejected"][reasons.OVER_BUDGET] >= 1  # every coordinate, round 6
    assert "event=accepted round=1 device=%s" % name in log  # the inflated claim
    assert "samples=30 claimed=%d" % codec.MAX_SAMPLES in log  # weighed as an honest device
    assert "reason=norm_bound detail=" in log and "norm_bound: " not in log  # said once
    saved = checkpoint.load(tmp_path / "state" / "checkpoint.json")
    assert np.all(np.isfinite(saved.theta)) and len(saved.extra["recent_norms"]) >= 20
    later = ["event=accepted round=%d device=%s " % (r, name) for r in (3, 4, 5)]
    assert any(line in log for line in later)  # reversed, stale or scaled: counted, clipped
    assert "clipped=%s" % name in log  # and the operator is told
    assert len(steps) == 8
    for rnd, moved, bound in steps:  # a step is at most β × the clip bound, whoever sent what
        assert moved <= bound * (1 + 1e-5), (rnd, moved, bound)


def test_hostile_telemetry_and_status_numbers_never_reach_the_round_close(session, tmp_path):
    """A 400-digit loss or an infinite energy in the telemetry of a device that answered used
    to raise OverflowError when the round closed."""
    fleet = session.fleet(SineUseCase(fleet_size=3), 3)
    device = fleet.agents[0].device_id
    service = session.service(config(session.port, tmp_path, rounds=4))
    thread, result = session.background(service)
    raw = Publisher(session.port)
    session.on_close(raw.close)
    bombs = [payload for leaf, payload in BOMBS.values() if leaf == "telemetry"]
    bombs.append(json.dumps({"round": 0, "deep": [[[[[[[[[[1]]]]]]]]]]}).encode())
    while thread.is_alive():
        for bomb in bombs:
            raw.send(TOPICS.telemetry(device), bomb)
        raw.send(TOPICS.status("evil-status"), b'{"state": "online", "params": -1}')
        thread.join(0.05)
    assert result["rounds"] == 4 and result["updates"] == 12
    for reason in (reasons.BAD_NUMBER, reasons.TOO_DEEP):
        assert result["rejected"][reason] >= 1, reason
    assert "evil-status" not in service.fleet.online()


def test_a_round_that_would_make_theta_non_finite_is_refused(tmp_path):
    service = AggregationService(config(1, tmp_path), EventLog(path=tmp_path / "s.log"))
    service.theta = np.full(service.n, HUGE, dtype=np.float32)
    kept = service.theta.copy()
    ledger = RoundLedger(0, 0, service.n)
    ledger.invite(["a", "b"])
    command = {"round": 0, "version": 0}
    for device in ("a", "b"):
        ledger.offer(device, forged_delta(command, service.n, range(service.n), kept, 30))
    service._aggregate(ledger)
    np.testing.assert_array_equal(service.theta, kept)
    assert not ledger.accepted and ledger.rejected == {reasons.NON_FINITE_MODEL: 2}
    assert "event=round_refused round=0 reason=non_finite_model" in (tmp_path / "s.log").read_text()


def test_whatever_a_handler_raises_is_counted_and_the_loop_goes_on(tmp_path):
    service = AggregationService(config(1, tmp_path), EventLog(path=tmp_path / "s.log"))

    def broken(device, payload):
        raise RecursionError("maximum recursion depth exceeded")

    service._on_telemetry = broken
    message = Event("message", TOPICS.telemetry("d1"), b"{}")
    service._guarded(message)
    service._guarded(message)
    assert service.refused == {reasons.INTERNAL_ERROR: 2}
    assert "reason=internal_error" in (tmp_path / "s.log").read_text()


def test_updates_admitted_together_are_each_counted_when_admission_raises(tmp_path):
    """The updates queued for one group commit are admitted after the events that carried
    them; whatever admission raises is counted once per update and the loop goes on."""
    from broker_service.server.journal import Journal

    service = AggregationService(config(1, tmp_path), EventLog(path=tmp_path / "s.log"))
    service.ledger = RoundLedger(0, 0, service.n)
    service.journal = Journal(tmp_path / "journal", 0)

    def broken(ledger, journal, messages):
        raise RecursionError("maximum recursion depth exceeded")

    service.admission.admit_many = broken
    for device in ("d1", "d2", "d3"):
        service._guarded(Event("message", TOPICS.update(device), b"\x00"))
    assert len(service.arrived) == 3 and not service.refused  # queued, not yet admitted
    service._admit_arrived()
    assert service.arrived == [] and service.refused == {reasons.INTERNAL_ERROR: 3}
    assert not service.ledger.accepted and Journal(tmp_path / "journal", 0).replay() == []
