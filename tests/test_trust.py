"""Per-device trust (core.trust): agreement with the server momentum, its moving average, the
weight it gives, its bounded and restorable state, and its place in the bounds' step."""

from __future__ import annotations

import numpy as np
import pytest

from broker_service.core.aggregate import SparseUpdate, sparse_weighted_mean
from broker_service.core.bounds import InfluenceBounds
from broker_service.core.hyperparams import settings_for
from broker_service.core.strategies import TinyMetaFed
from broker_service.core.trust import (
    PRIOR,
    DeviceTrust,
    agreement,
    next_momentum,
    next_trust,
    trust_weight,
    weighted,
)
from broker_service.server.checkpoint import Checkpoint, load, save

N = 6


def sparse(indices, values, samples=30) -> SparseUpdate:
    return SparseUpdate(
        np.asarray(indices, dtype=np.uint32), np.asarray(values, dtype=np.float32), samples
    )


def test_agreement_is_the_cosine_on_the_updates_own_coordinates():
    momentum = np.array([1.0, 0.0, 5.0, 0.0, -2.0, 0.0], dtype=np.float32)
    assert agreement(sparse([0, 2], [2.0, 10.0]), momentum) == pytest.approx(1.0)
    assert agreement(sparse([0, 2], [-1.0, -5.0]), momentum) == pytest.approx(-1.0)
    assert agreement(sparse([0, 4], [1.0, 0.5]), momentum) == pytest.approx(0.0)
    assert agreement(sparse([1, 3], [1.0, 1.0]), momentum) is None  # m is zero there
    assert agreement(sparse([0], [1.0]), None) is None


def test_the_moving_averages_and_the_weight():
    assert next_trust(0.0, -0.5, 0.2) == pytest.approx(-0.1)
    assert next_trust(0.5, 0.5, 0.2) == pytest.approx(0.5)
    first = next_momentum(None, np.ones(3), 0.1)
    np.testing.assert_allclose(first, 1.0)
    np.testing.assert_allclose(next_momentum(first, np.zeros(3), 0.1), 0.9)
    assert trust_weight(0.3, 0.1) == 1.0 and trust_weight(0.0, 0.1) == 1.0  # only distrust costs
    assert trust_weight(-0.05, 0.1) == pytest.approx(0.5)
    assert trust_weight(-0.2, 0.1) == 0.0
    assert trust_weight(-0.01, 0.0) == 0.0 and trust_weight(0.0, 0.0) == 1.0


def test_weighted_multiplies_in_and_drops_zero_weights():
    a, b = sparse([0], [1.0]), sparse([1], [1.0])
    out = weighted([a, b], [0.5, 0.0])
    assert len(out) == 1 and out[0].weight == 0.5 and out[0].samples == 30
    mean = sparse_weighted_mean(2, [sparse([0], [1.0]), SparseUpdate(b.indices, b.values, 30, 0.5)])
    np.testing.assert_allclose(mean, [1 / 1.5, 0.5 / 1.5])


def honest_round(rng, count):
    """Updates around a shared direction (the first three coordinates), as Reptile's are."""
    return [
        sparse(range(N), np.array([1.0, 1.0, 1.0, 0, 0, 0]) + 0.8 * rng.standard_normal(N))
        for _ in range(count)
    ]


def test_a_persistently_reversed_device_stops_counting_and_honest_ones_keep_theirs():
    rng = np.random.default_rng(0)
    trust = DeviceTrust(rate=0.2, full=0.1, momentum_rate=0.1)
    devices = ["a", "b", "c", "d", "evil"]
    for t in range(40):
        updates = honest_round(rng, 5)
        updates[-1] = sparse(range(N), -np.asarray(updates[-1].values))  # reversed
        weights = trust.weigh(devices, updates, t)
        trust.commit(sparse_weighted_mean(N, weighted(updates, weights)))
    assert weights[-1] == 0.0 and trust.of("evil") < -0.1
    assert weights[:4] == [1.0] * 4 and all(trust.of(d) > 0 for d in "abcd")
    assert trust.downweighted == [4]
    fresh = trust.weigh(["evil~2"], [sparse(range(N), [-1.0, -1, -1, 0, 0, 0])], 41)
    assert fresh == [0.0]  # a fresh id is judged by its first update against m


def test_nothing_is_kept_until_the_step_is_committed_and_off_means_weight_one():
    trust = DeviceTrust(rate=0.5, full=0.1)
    trust.momentum = np.ones(N, dtype=np.float32)
    assert trust.weigh(["x"], [sparse([0], [-1.0])], 0) == [0.0]
    assert trust.of("x") == PRIOR  # the round was refused: no commit
    off = DeviceTrust(rate=0.0)
    assert off.weigh(["x"], [sparse([0], [-1.0])], 0) == [1.0] and not off.enabled
    off.commit(np.ones(N))
    assert off.momentum is None


def test_without_momentum_or_with_another_models_momentum_every_device_counts():
    trust = DeviceTrust(rate=0.02)
    assert trust.weigh(["x", "y"], [sparse([0], [1.0]), sparse([1], [-1.0])], 0) == [1.0, 1.0]
    trust.momentum = np.ones(2, dtype=np.float32)  # shorter than the updates' model
    assert trust.weigh(["x"], [sparse([5], [-1.0])], 1) == [1.0]


def test_the_state_is_bounded_and_survives_a_checkpoint(tmp_path):
    trust = DeviceTrust(rate=0.02, max_devices=3)
    trust.momentum = np.linspace(-1, 1, N).astype(np.float32)
    trust.trust = {"a": (0.1, 1), "b": (-0.4, 2), "c": (0.0, 3)}
    trust.pending = {"d": (0.2, 4)}
    trust.commit(np.zeros(N))
    assert sorted(trust.trust) == ["b", "c", "d"]  # the least recently seen is forgotten
    ckpt = Checkpoint({}, np.zeros(N, np.float32), 5, "tinymetafed", "sine")
    ckpt.extra["trust"] = trust.to_dict()
    save(tmp_path / "c.json", ckpt)
    back = DeviceTrust(saved=load(tmp_path / "c.json").extra["trust"])
    assert back.trust == trust.trust
    np.testing.assert_array_equal(back.momentum, trust.momentum)


def test_restore_skips_what_is_not_a_trust_entry():
    saved = {
        "devices": {
            "ok": [-0.5, 7],
            "nan": [float("nan"), 1],
            "big": [3.0, 1],
            "flag": [True, 1],
            "short": [0.1],
            "round": [0.1, 1.5],
        },
        "momentum_f32_b64": "not base64!",
    }
    trust = DeviceTrust(saved=saved)
    assert trust.trust == {"ok": (-0.5, 7)} and trust.momentum is None
    DeviceTrust(saved={"devices": [1, 2]})  # not a mapping: ignored
    DeviceTrust(saved=[("x", 1)])  # type: ignore[arg-type]


def test_the_bounds_step_leaves_a_distrusted_device_out():
    settings = settings_for("sine", rounds=100)
    strategy = TinyMetaFed(settings)
    bounds = InfluenceBounds(clip_recent=0.0, trust=DeviceTrust(rate=0.5, full=0.1))
    theta = np.zeros(N, dtype=np.float32)
    good = sparse(range(3), [1.0, 1.0, 1.0])
    bad = sparse(range(3), [-1.0, -1.0, -1.0])
    first = bounds.step(strategy, theta, [good, good], 0, 100, ["a", "b"])  # m starts here
    assert first is not None and bounds.trust.momentum is not None
    moved = bounds.step(strategy, theta, [good, good, bad], 1, 100, ["a", "b", "evil"])
    assert bounds.trust.downweighted == [2]
    alone = strategy.aggregate(theta, [good, good], 1, 100)
    np.testing.assert_allclose(moved, alone)  # as if the reversed update had not come
    plain = InfluenceBounds(clip_recent=0.0)
    same = plain.step(strategy, theta, [good, good, bad], 1, 100)  # no ids: no trust
    np.testing.assert_allclose(same, strategy.aggregate(theta, [good, good, bad], 1, 100))


def test_from_settings_reads_the_trust_settings():
    bounds = InfluenceBounds.from_settings(
        settings_for("sine", trust_rate=0.3, trust_full=0.2, trust_momentum=0.05)
    )
    assert (bounds.trust.rate, bounds.trust.full, bounds.trust.momentum_rate) == (0.3, 0.2, 0.05)
    assert not InfluenceBounds.from_settings(settings_for("sine")).trust.enabled  # off by default
