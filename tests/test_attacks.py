"""The hostile devices of the benchmark send what they say, and the bounds treat each as the
service does."""

from __future__ import annotations

import numpy as np
import pytest

from broker_service.core.aggregate import SparseUpdate, update_norm
from broker_service.core.hyperparams import settings_for
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import TinyMetaFed
from broker_service.sim.attacks import (
    LEARNING_ATTACKS,
    Attacker,
    WatchedBounds,
    hostile_devices,
)
from broker_service.sim.bench import episodes_for
from broker_service.sim.simulation import initial_theta, run
from broker_service.usecases.sine import SineUseCase
from device_agent import codec

THETA = np.full(16, 0.25, dtype=np.float32)  # ‖θ‖ = 1


def honest(values=(0.03, -0.04), samples=30) -> SparseUpdate:
    return SparseUpdate(np.array([2, 9], dtype=np.uint32), np.array(values, np.float32), samples)


def attacked(attack: str, rounds: int = 1) -> tuple[SparseUpdate, WatchedBounds]:
    bounds = WatchedBounds()
    bounds.screen(honest(), THETA, 30)  # the attacker has seen the model
    attacker = Attacker(attack, ["evil"], 0, bounds)
    good = honest()
    assert attacker("good", good, 0) is good
    for t in range(rounds):
        sent = attacker("evil", honest((0.1 * (t + 1), 0.0)), t)
    return sent, bounds


def test_hostile_devices_are_a_seeded_fraction():
    devices = ["d%03d" % i for i in range(100)]
    assert len(hostile_devices(devices, 0.05, 0)) == 5
    assert hostile_devices(devices, 0.2, 1) == hostile_devices(devices, 0.2, 1)
    assert len(hostile_devices(devices[:3], 0.05, 0)) == 1


@pytest.mark.parametrize("attack", ["huge", "nan"])
def test_absurd_updates_are_refused(attack):
    sent, bounds = attacked(attack)
    assert bounds.screen(sent, THETA, 30) is None


def test_an_inflated_claim_is_clamped():
    sent, bounds = attacked("inflate")
    assert sent.samples == codec.MAX_SAMPLES
    assert bounds.screen(sent, THETA, 30).samples == 30
    np.testing.assert_allclose(sent.values, [-0.1, 0.0])  # the update reversed


@pytest.mark.parametrize("attack", ["max_norm", "drift"])
def test_bound_seeking_updates_stay_just_under_the_refusal_bound(attack):
    sent, bounds = attacked(attack)
    assert update_norm(sent.values) == pytest.approx(0.9 * bounds.norm_bound(THETA), rel=1e-5)
    assert bounds.screen(sent, THETA, 30) is not None


def test_drift_keeps_to_the_entries_an_honest_update_has_and_one_direction():
    bounds = WatchedBounds()
    bounds.screen(honest(), THETA, 30)
    attacker = Attacker("drift", ["evil", "worse"], 0, bounds)
    first, second = attacker("evil", honest(), 0), attacker("worse", honest(), 1)
    assert len(first.values) == len(honest().values)
    np.testing.assert_array_equal(first.indices, second.indices)
    np.testing.assert_allclose(first.values, second.values)
    dense = SparseUpdate(np.arange(16, dtype=np.uint32), np.full(16, 0.01, np.float32), 30)
    assert bounds.screen(dense, THETA, 30, entries=2) is None  # more than the round keeps
    assert bounds.screen(first, THETA, 30, entries=2) is not None


def test_the_others():
    assert np.allclose(attacked("sign_flip")[0].values, [-1.0, 0.0])
    assert np.allclose(attacked("scaled")[0].values, [5.0, 0.0])
    noise = attacked("noise")[0].values  # Gaussian, 10 × 0.1 / √2 a coordinate
    assert 0.1 < update_norm(noise) < 10 and np.array_equal(noise, attacked("noise")[0].values)
    stale, _ = attacked("stale", rounds=3)
    assert np.allclose(stale.values, [0.1, 0.0])  # the first round's update, again
    assert set(LEARNING_ATTACKS) == {
        "sign_flip",
        "scaled",
        "noise",
        "max_norm",
        "drift",
        "inflate",
        "huge",
        "nan",
        "stale",
        "alternate",
        "reenroll",
        "sleeper",
    }


def test_an_alternating_device_reverses_every_other_turn_and_a_reenrolling_one_changes_id():
    bounds = WatchedBounds()
    alternate = Attacker("alternate", ["evil"], 0, bounds)
    sent = [alternate("evil", honest(), t).values[0] for t in range(4)]
    assert np.allclose(sent, [0.03, -0.3, 0.03, -0.3])
    assert alternate.identity("evil", 3) == "evil"
    again = Attacker("reenroll", ["evil"], 0, bounds)
    assert np.allclose(again("evil", honest(), 0).values, [-0.3, 0.4])
    assert [again.identity("evil", t) for t in (0, 1)] == ["evil~0", "evil~1"]
    assert again.identity("good", 1) == "good"


def test_a_sleeper_is_honest_for_the_first_half_of_the_session_then_reverses():
    sleeper = Attacker("sleeper", ["evil"], 0, WatchedBounds(), rounds=10)
    sent = [sleeper("evil", honest(), t).values[0] for t in (0, 4, 5, 9)]
    assert np.allclose(sent, [0.03, 0.03, -0.3, -0.3])
    assert sleeper("good", honest(), 9).values[0] == pytest.approx(0.03)


def test_the_simulation_applies_the_service_bounds():
    use_case = SineUseCase(fleet_size=10)
    settings = settings_for("sine", rounds=4, eval_every=4, eval_devices=2, final_devices=2)
    curve, final = episodes_for(use_case, settings, 0)
    net = NumpyNet(use_case.spec)
    start = initial_theta(net, 0)[: TinyMetaFed(settings).global_size(net)]
    bounds = WatchedBounds.from_settings(settings)
    everyone = Attacker("huge", use_case.device_ids, 0, bounds)
    strategy = TinyMetaFed(settings)
    result = run(strategy, use_case, settings, 0, curve, final, tamper=everyone, bounds=bounds)
    assert result.refused_updates == result.updates == 20
    np.testing.assert_array_equal(result.theta, start)  # nothing got through


def test_the_agreement_benchmark_records_honest_and_hostile_agreements():
    """`python -m benchmarks.hostile agreement` on a short session: the observer's pending
    entries are read as the trust module writes them."""
    from benchmarks import hostile

    row = hostile.agreement_job("sine", None, 20, "sign_flip", 0.2, 0)
    assert row["honest_updates"]["count"] > 0 and row["hostile_updates"]["count"] > 0
    assert row["honest_updates"]["mean"] > row["hostile_updates"]["mean"]
