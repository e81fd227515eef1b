"""Server maths: sparse weighted and coverage-aware means, linearly decaying outer step,
meta-update, cohorts."""

import numpy as np
import pytest

from broker_service.core.aggregate import (
    SparseUpdate,
    aggregate_mean,
    meta_update,
    outer_step,
    sparse_coverage_mean,
    sparse_weighted_mean,
    weighted_scatter_sum,
)
from broker_service.core.cohort import sample_cohort


def test_sparse_mean_treats_absent_coordinates_as_zero_and_weights_by_samples():
    a = SparseUpdate(np.array([0, 2]), np.array([1.0, 4.0], dtype=np.float32), 10)
    b = SparseUpdate(np.array([2, 3]), np.array([2.0, -3.0], dtype=np.float32), 30)
    agg = sparse_weighted_mean(5, [a, b])
    dense = (10 * np.array([1, 0, 4, 0, 0]) + 30 * np.array([0, 0, 2, -3, 0])) / 40
    np.testing.assert_allclose(agg, dense, rtol=1e-6)


def test_sparse_mean_of_dense_updates_is_the_weighted_average():
    rng = np.random.default_rng(1)
    deltas = rng.standard_normal((4, 50)).astype(np.float32)
    weights = [1, 2, 3, 4]
    ups = [SparseUpdate(np.arange(50), d, w) for d, w in zip(deltas, weights, strict=True)]
    np.testing.assert_allclose(
        sparse_weighted_mean(50, ups), np.average(deltas, axis=0, weights=weights), rtol=1e-5
    )


def test_zero_weights_fall_back_to_equal_weights_and_empty_cohort_changes_nothing():
    ups = [
        SparseUpdate(np.array([0]), np.array([2.0]), 0),
        SparseUpdate(np.array([0]), np.array([4.0]), 0),
    ]
    assert sparse_weighted_mean(1, ups)[0] == pytest.approx(3.0)
    theta = np.ones(3, dtype=np.float32)
    np.testing.assert_array_equal(meta_update(theta, [], 0.5), theta)


def test_the_vectorised_scatter_add_equals_a_loop_over_updates_bit_for_bit():
    """One bincount over the concatenated indices gives exactly what adding the updates one by
    one gives (each coordinate sums its terms in the same order)."""
    rng = np.random.default_rng(7)
    n = 2000
    ups = []
    for _ in range(60):
        k = int(rng.integers(0, n // 3))
        idx = np.sort(rng.choice(n, size=k, replace=False))
        values = (rng.standard_normal(k) * 10.0 ** rng.integers(-6, 3)).astype(np.float32)
        ups.append(SparseUpdate(idx, values, int(rng.integers(0, 40))))
    weights = np.array([u.samples for u in ups], dtype=np.float64)
    loop = np.zeros(n, dtype=np.float64)
    for w, u in zip(weights, ups, strict=True):
        loop[u.indices] += w * np.asarray(u.values)
    np.testing.assert_array_equal(weighted_scatter_sum(n, ups, weights), loop)
    np.testing.assert_array_equal(
        sparse_weighted_mean(n, ups), (loop / weights.sum()).astype(np.float32)
    )


def test_the_scatter_add_refuses_an_index_outside_the_model():
    up = SparseUpdate(np.array([0, 5]), np.array([1.0, 1.0], dtype=np.float32), 1)
    with pytest.raises(ValueError):
        weighted_scatter_sum(5, [up], np.ones(1))
    assert weighted_scatter_sum(3, [], np.ones(0)).tolist() == [0.0, 0.0, 0.0]


def test_outer_step_decays_linearly_to_zero():
    assert outer_step(1.0, 0, 100) == 1.0
    assert outer_step(1.0, 50, 100) == pytest.approx(0.5)
    assert outer_step(0.4, 100, 100) == 0.0
    assert outer_step(0.4, 7, 0) == 0.4


def test_meta_update_interpolates_towards_the_mean_delta():
    theta = np.zeros(4, dtype=np.float32)
    up = SparseUpdate(np.array([1, 3]), np.array([2.0, -2.0], dtype=np.float32), 5)
    np.testing.assert_allclose(meta_update(theta, [up], 0.25), [0, 0.5, 0, -0.5])


def test_cohort_is_distinct_deterministic_and_bounded():
    online = ["d%d" % i for i in range(20)]
    a = sample_cohort(online, 5, np.random.default_rng(3))
    assert len(set(a)) == 5 and set(a) <= set(online)
    assert a == sample_cohort(online, 5, np.random.default_rng(3))
    assert sample_cohort(online[:3], 5, np.random.default_rng(3)) == online[:3]
    assert sample_cohort(online, 0, np.random.default_rng(3)) == []


def test_clip_scales_long_updates_only():
    from broker_service.core.aggregate import clip_update

    up = SparseUpdate(np.array([0, 1]), np.array([3.0, 4.0], dtype=np.float32), 1)
    assert np.allclose(clip_update(up, 1.0).values, [0.6, 0.8])
    assert clip_update(up, 10.0) is up


def test_coverage_mean_averages_each_coordinate_over_the_devices_that_sent_it():
    a = SparseUpdate(np.array([0, 2]), np.array([1.0, 4.0], dtype=np.float32), 10)
    b = SparseUpdate(np.array([2, 3]), np.array([2.0, -3.0], dtype=np.float32), 30)
    agg = sparse_coverage_mean(5, [a, b])
    # coordinate 2 is sent by both (weighted 10:30); 0 and 3 by one each; 1 and 4 by none
    np.testing.assert_allclose(agg, [1.0, 0.0, (10 * 4 + 30 * 2) / 40, -3.0, 0.0], rtol=1e-6)
    # the plain mean shrinks the coordinates one device sent by that device's share
    plain = sparse_weighted_mean(5, [a, b])
    assert plain[0] == pytest.approx(agg[0] * 10 / 40)
    assert plain[3] == pytest.approx(agg[3] * 30 / 40)


def test_coverage_mean_of_dense_updates_is_the_plain_mean_and_empty_is_zero():
    rng = np.random.default_rng(4)
    ups = [
        SparseUpdate(np.arange(30), rng.standard_normal(30).astype(np.float32), w)
        for w in (3, 1, 0)
    ]
    np.testing.assert_allclose(sparse_coverage_mean(30, ups), sparse_weighted_mean(30, ups))
    zero = [SparseUpdate(np.array([1]), np.array([2.0]), 0), SparseUpdate(np.array([1]), [4.0], 0)]
    assert sparse_coverage_mean(3, zero)[1] == pytest.approx(3.0)  # equal weights fallback
    np.testing.assert_array_equal(sparse_coverage_mean(4, []), np.zeros(4, dtype=np.float32))


def test_aggregate_mean_is_the_weighted_or_the_coverage_mean():
    a = SparseUpdate(np.array([0]), np.array([10.0], dtype=np.float32), 1)
    b = SparseUpdate(np.array([1]), np.array([1.0], dtype=np.float32), 1)
    np.testing.assert_allclose(aggregate_mean(2, [a, b], coverage=True), [10.0, 1.0])
    np.testing.assert_allclose(aggregate_mean(2, [a, b]), [5.0, 0.5])
