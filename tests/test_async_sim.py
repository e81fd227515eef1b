"""Asynchronous meta-training in simulation (broker_service.sim.buffered): when devices wake,
how stale their updates get, and that a short asynchronous run learns at the invited rounds'
device updates."""

import numpy as np
import pytest

from broker_service.core.hyperparams import settings_for
from broker_service.core.strategies import ALGORITHMS
from broker_service.sim.bench_plan import Entry, job_settings
from broker_service.sim.bench_run import episodes_for
from broker_service.sim.buffered import (
    AsyncSchedule,
    StepStalled,
    _check_stalled,
    _Service,
    first_wakes,
    next_wake,
    run_async,
)
from broker_service.sim.usecase_cache import cached_use_case, use_case_options


def test_wakes_are_spread_over_a_period_and_seeded():
    schedule = AsyncSchedule(buffer=5, period_s=100.0, jitter=0.1)
    devices = ["d%d" % i for i in range(200)]
    wakes = first_wakes(devices, schedule, seed=3)
    assert wakes == first_wakes(devices, schedule, seed=3)
    assert wakes != first_wakes(devices, schedule, seed=4)
    assert min(wakes) >= 0 and max(wakes) < 100.0
    assert np.std(wakes) > 20  # spread, not bunched
    rng = np.random.default_rng(0)
    later = [next_wake(50.0, schedule, rng) for _ in range(100)]
    assert all(140.0 <= w <= 160.0 for w in later)


def test_an_asynchronous_entry_makes_the_rounds_device_updates():
    settings = settings_for("sine", quick=True)
    entry = Entry("a", "tinymetafed", schedule=(("buffer", 2),))
    own = job_settings(settings, None, entry, 0)
    assert own["rounds"] * 2 == settings["rounds"] * settings["cohort"]


def _short_run(data_dir, round_s, buffer=None, step_timeout=None):
    settings = settings_for("sine", quick=True, rounds=12, eval_every=6)
    use_case = cached_use_case("sine", str(data_dir), 0, 0, use_case_options("sine", settings))
    curve, _ = episodes_for(use_case, settings, 0)
    strategy = ALGORITHMS["tinymetafed"](settings)
    schedule = AsyncSchedule(
        buffer=buffer or int(settings["cohort"]),
        period_s=600.0,
        round_s=round_s,
        step_timeout=step_timeout,
    )
    return run_async(strategy, use_case, settings, 0, curve, [], schedule), settings


def test_updates_are_stale_only_when_steps_happen_during_a_round(data_dir):
    fresh, settings = _short_run(data_dir, round_s=0.001)
    assert set(fresh.staleness) == {0}
    slow, _ = _short_run(data_dir, round_s=120.0)
    assert max(slow.staleness) >= 1
    steps = int(settings["rounds"])
    assert len(fresh.result.per_round) == steps == len(slow.result.per_round)
    assert all(r["cohort"] == int(settings["cohort"]) for r in fresh.result.per_round)
    assert fresh.timeout_steps == 0 == slow.timeout_steps


def test_a_short_asynchronous_run_learns(data_dir):
    run, _ = _short_run(data_dir, round_s=30.0)
    first, last = run.result.curve[0][1], run.result.curve[-1][1]
    assert last < first  # mse on validation devices
    assert run.too_stale == 0


def test_a_buffer_no_version_can_fill_steps_at_its_deadline(data_dir):
    """One update per device per version: a buffer larger than the fleet never fills, and
    each step is taken when it has been open for step_timeout, with what it holds."""
    run, settings = _short_run(data_dir, round_s=1.0, buffer=100_000, step_timeout=300.0)
    cohorts = [r["cohort"] for r in run.result.per_round]
    assert len(cohorts) == int(settings["rounds"])
    assert all(1 <= c < 100_000 for c in cohorts)
    assert run.timeout_steps == len(cohorts)
    # a step every 300 simulated seconds or a little later (the first update after an empty one)
    assert 300.0 * len(cohorts) <= run.simulated_s < 600.0 * len(cohorts)


def test_a_step_nothing_can_fill_is_reported_not_waited_for():
    service = _Service(np.zeros(3, np.float32))
    service.version = 4
    devices = ["a", "b"]
    _check_stalled(service, devices, {"a": 4})  # b can still train on version 4
    service.in_flight = 1
    _check_stalled(service, devices, {"a": 4, "b": 4})  # an update is on its way
    service.in_flight = 0
    with pytest.raises(StepStalled, match="step 4"):
        _check_stalled(service, devices, {"a": 4, "b": 4})
