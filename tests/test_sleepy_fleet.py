"""The simulated sleepy fleet (broker_service/sim/sleepy_fleet.py) against a real mosquitto and
the real service in async mode: steps are taken from the wakes' updates, every update a wake
sent is accepted once or still held unacknowledged in its device's flash, none is lost or
counted twice, and the devices' flash state and rings are what the wakes left."""

from __future__ import annotations

from collections import Counter

from broker_service.observe.logs import EventLog
from broker_service.server.buffered import AsyncService
from broker_service.sim.sleepy_fleet import SleepyFleet
from broker_service.usecases.sine import SineUseCase
from device_agent import state as flash
from device_agent.model import Plan

DEVICES = 6
STEPS = 3


class Accepted(EventLog):
    """The service's log, with its accepted (device, version) pairs kept."""

    def __init__(self, path):
        super().__init__(path=path)
        self.pairs: list[tuple[str, int]] = []

    def __call__(self, event, **fields):
        super().__call__(event, **fields)
        if event == "accepted":
            self.pairs.append((fields["device"], int(fields["version"])))


def test_sleepy_fleet_steps_without_losing_or_repeating_updates(session, tmp_path):
    use_case = SineUseCase(fleet_size=DEVICES)
    cfg = session.config(
        mode="async", rounds=STEPS, buffer=3, step_timeout=60.0, eval_devices=1, eval_every=100
    )
    log = Accepted(tmp_path / "service.log")
    steps = []
    service = AsyncService(cfg, log, progress=lambda report: steps.append(report))
    # 6 devices, a 1 h period compressed 3600 times: a wake every 1/6 s over the fleet
    fleet = SleepyFleet(
        "127.0.0.1", session.port, use_case, DEVICES, tmp_path / "devices", compression=3600.0
    )
    session.on_close(fleet.stop)
    fleet.start()
    summary = service.run()
    fleet.stop()

    assert summary["rounds"] == STEPS and len(steps) == STEPS
    assert all(len(report.participants) >= 3 for report in steps)
    accepted = Counter(log.pairs)
    assert max(accepted.values()) == 1  # no update counted twice
    assert summary["updates"] == sum(accepted.values())
    held = set()
    for device, device_cfg in fleet.configs.items():
        st, _ = flash.load(device_cfg["sleep"]["state"], Plan(use_case.spec), 1 << 20)
        if st.update is not None:
            held.add((device, st.update_version))
        assert st.wakes >= 1
    sent = set(fleet.stats.published)
    assert len(sent) == len(fleet.stats.published)
    assert sent - set(accepted) <= held  # not accepted: still held, to be sent again
    assert set(accepted) <= sent
    stats = fleet.stats.summary()
    assert stats["failed_wakes"] == 0
    assert stats["sensor_wakes"] == stats["training_wakes"] * fleet.samples
