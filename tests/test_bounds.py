"""One device's influence is bounded: sample clamp, norm bound from the first update, clipping,
and no non-finite step (core.bounds and its pure functions in core.aggregate)."""

from __future__ import annotations

import numpy as np
import pytest

from broker_service.core.aggregate import (
    SparseUpdate,
    cap_norm,
    clamp_samples,
    clip_update,
    meta_update,
    model_norm_bound,
    update_norm,
    within_bound,
)
from broker_service.core.bounds import MIN_NORMS, RECENT_NORMS, InfluenceBounds, sample_budget
from broker_service.core.hyperparams import settings_for
from broker_service.core.strategies import TinyMetaFed

N = 8


def update(values, samples=30) -> SparseUpdate:
    values = np.asarray(values, dtype=np.float32)
    return SparseUpdate(np.arange(len(values), dtype=np.uint32), values, samples)


def test_update_norm_does_not_overflow_in_float32():
    assert update_norm(np.array([3e38, 3e38], dtype=np.float32)) == pytest.approx(3e38 * 2**0.5)
    assert np.isnan(update_norm(np.array([np.nan], dtype=np.float32)))


def test_within_bound():
    assert within_bound(1.0, 0.0) and within_bound(1.0, 1.0) and not within_bound(1.1, 1.0)
    assert not within_bound(float("nan"), 0.0) and not within_bound(float("inf"), 0.0)


def test_claimed_samples_are_clamped_to_the_round_budget():
    assert clamp_samples(update([1.0], 65535), 30).samples == 30
    kept = update([1.0], 20)
    assert clamp_samples(kept, 30) is kept
    assert sample_budget({"recon_samples": 10, "adapt_samples": 20}) == 30


def test_the_inflated_claim_no_longer_turns_the_step():
    """The issue's case: four honest devices at 30 samples, one claiming 65,535."""
    honest = [update([1.0]) for _ in range(4)]
    hostile = update([-3.0], 65535)
    theta = np.zeros(1, dtype=np.float32)
    assert meta_update(theta, honest + [hostile], 1.0)[0] < 0  # the sign turned
    clamped = clamp_samples(hostile, 30)
    assert meta_update(theta, honest + [clamped], 1.0)[0] == pytest.approx(0.2)


def test_clip_update_keeps_the_direction():
    clipped = clip_update(update([3e38, 3e38]), 1.0)
    assert update_norm(clipped.values) == pytest.approx(1.0, rel=1e-6)
    assert clipped.values[0] == pytest.approx(clipped.values[1])


def test_model_norm_bound():
    assert model_norm_bound(np.array([3.0, 4.0]), 0.1) == 5.0
    assert model_norm_bound(np.zeros(3), 0.1) == 0.1


def test_the_norm_bound_exists_from_the_first_update():
    theta = np.full(N, 0.5, dtype=np.float32)  # ‖θ‖ = √2
    bounds = InfluenceBounds()
    assert bounds.norm_bound(theta) == pytest.approx(2**0.5)
    assert bounds.screen(update([1e38, 1e38]), theta, 30) is None
    assert bounds.screen(update([np.inf]), theta, 30) is None
    assert bounds.screen(update([0.1], 65535), theta, 30).samples == 30


def test_the_history_tightens_the_bounds_and_survives_a_restart():
    theta = np.full(N, 100.0, dtype=np.float32)
    bounds = InfluenceBounds(clip_recent=3.0)
    for _ in range(MIN_NORMS):
        bounds.remember(update([0.3, 0.4]))  # norm 0.5
    assert bounds.norm_bound(theta) == pytest.approx(50.0)
    assert bounds.clip_bound(theta) == pytest.approx(1.5)
    again = InfluenceBounds(clip_recent=3.0, norms=bounds.to_list())
    assert again.norm_bound(theta) == pytest.approx(50.0)
    again.restore([float("nan"), -1.0, "x", None] + [0.5] * (2 * RECENT_NORMS))
    assert len(again.norms) == RECENT_NORMS and np.all(np.isfinite(again.norms))


def test_from_settings():
    settings = settings_for("sine")
    bounds = InfluenceBounds.from_settings(settings, max_norm=2.0)
    assert bounds.max_norm == 2.0 and bounds.clip_recent == settings["clip_recent"]
    assert bounds.floor == pytest.approx(settings["adapt_lr"] * 30)


def test_a_step_that_would_make_theta_non_finite_is_refused():
    settings = settings_for("sine", rounds=10)
    strategy = TinyMetaFed(settings)
    theta = np.full(N, 3e38, dtype=np.float32)
    bounds = InfluenceBounds(clip_recent=0.0)
    big = update([3e38] * N)
    assert bounds.screen(big, theta, 30) is not None  # within ‖θ‖, yet θ + Δ overflows
    assert bounds.step(strategy, theta, [big, big], 0, 10) is None
    small = bounds.step(strategy, theta * 0, [update([1.0] * N)], 0, 10)
    assert small is not None and np.all(np.isfinite(small))


def test_cap_norm_scales_onto_the_sphere_and_leaves_shorter_vectors_alone():
    theta = np.array([3.0, 4.0], dtype=np.float32)
    assert cap_norm(theta, 10.0) is theta and cap_norm(theta, 0.0) is theta
    np.testing.assert_allclose(cap_norm(theta, 2.5), [1.5, 2.0], rtol=1e-6)


def test_theta_grows_at_most_max_model_growth_times_its_starting_length():
    settings = settings_for("sine", rounds=10, outer_lr=1.0)
    strategy = TinyMetaFed(settings)
    start = np.full(N, 0.5, dtype=np.float32)  # ‖θ‖ = √2
    bounds = InfluenceBounds(clip_recent=0.0, growth=3.0)
    push = [update([4.0] * N)]  # the mean step alone is 8√2 long
    stepped = bounds.step(strategy, start, push, 0, 10)
    assert bounds.capped and update_norm(stepped) == pytest.approx(3 * update_norm(start))
    np.testing.assert_allclose(stepped / update_norm(stepped), start / update_norm(start))
    again = bounds.step(strategy, stepped, [update([-0.1] * N)], 1, 10)  # back inside
    assert not bounds.capped and update_norm(again) < 3 * update_norm(start)
    assert bounds.reference == pytest.approx(update_norm(start))  # the first θ's, kept
    free = InfluenceBounds(clip_recent=0.0, growth=0.0)
    assert update_norm(free.step(strategy, start, push, 0, 10)) > 3 * update_norm(start)
    assert not free.capped
    assert InfluenceBounds.from_settings(settings_for("sine", max_model_growth=5.0)).growth == 5
    for bad in (0.5, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_model_growth"):
            InfluenceBounds.from_settings(settings_for("sine", max_model_growth=bad))


def test_disabled_bounds_let_everything_through():
    bounds = InfluenceBounds(enabled=False)
    hostile = update([np.nan], 65535)
    assert bounds.screen(hostile, np.ones(N), 30) is hostile
    assert bounds.norm_bound(np.ones(N)) == 0.0 and bounds.clip_bound(np.ones(N)) == 0.0
