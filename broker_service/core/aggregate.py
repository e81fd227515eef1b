"""Server-side aggregation maths: pure functions over sparse updates (brief section 2, step 4)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SparseUpdate:
    """A decoded device update: Δ at `indices` (ascending) with weight `samples` × `weight`
    (`weight` < 1 for a device the service trusts less, core.trust)."""

    indices: np.ndarray
    values: np.ndarray
    samples: int
    weight: float = 1.0


def outer_step(beta0: float, t: int, total_rounds: int) -> float:
    """Reptile's linearly decaying outer step β_t = β_0 (1 − t/T), t counted from 0."""
    if total_rounds <= 0:
        return beta0
    return beta0 * max(0.0, 1.0 - t / total_rounds)


def _weights(updates: Sequence[SparseUpdate]) -> np.ndarray:
    """The devices' sample counts times their trust weights (all-zero weights fall back to equal
    weights)."""
    weights = np.array([u.samples * u.weight for u in updates], dtype=np.float64)
    return weights if weights.sum() > 0 else np.ones(len(updates))


def sparse_weighted_mean(n: int, updates: Sequence[SparseUpdate]) -> np.ndarray:
    """Σ_i w_i Δ_i / Σ_i w_i over dense length n; coordinates a device did not send count as 0.

    Weights are the devices' sample counts times their trust weights (all-zero weights fall
    back to equal weights).
    """
    if len(updates) == 0:
        return np.zeros(n, dtype=np.float32)
    weights = _weights(updates)
    return (weighted_scatter_sum(n, updates, weights) / weights.sum()).astype(np.float32)


def weighted_scatter_sum(
    n: int, updates: Sequence[SparseUpdate], weights: np.ndarray
) -> np.ndarray:
    """Σ_i w_i Δ_i as a dense float64 vector of length n: one np.add.at per update of its
    float64(Δ) · w_i, which numpy runs as one vectorised pass for int64 indices and float64
    values (2.4× faster than scattering the concatenated updates of a round, measured at 100k
    parameters, and no concatenated copies). Each coordinate sums its terms in update order
    from 0.0, as a loop of `total[idx] += w * values` would: the result is the same bit for
    bit. Raises ValueError for an index outside [0, n) (indices are ascending, SparseUpdate)."""
    total = np.zeros(n, dtype=np.float64)
    for update, weight in zip(updates, np.asarray(weights, dtype=np.float64), strict=True):
        index = np.asarray(update.indices, dtype=np.int64)
        if len(index) and (int(index[0]) < 0 or int(index[-1]) >= n):
            raise ValueError("an update index is outside [0, %d)" % n)
        try:
            np.add.at(total, index, np.multiply(update.values, weight, dtype=np.float64))
        except IndexError:  # indices out of order and one of them out of range
            raise ValueError("an update index is outside [0, %d)" % n) from None
    return total


def sparse_coverage_mean(n: int, updates: Sequence[SparseUpdate]) -> np.ndarray:
    """Each coordinate's sample-weighted mean over the devices that sent it:
    Σ_i w_i Δ_ij / Σ_{i sent j} w_i, and 0 where no device sent it. Experimental (the
    `coverage_mean` setting, off by default; server only).

    With Top-P% uploads most coordinates are sent by one device of the cohort, so
    `sparse_weighted_mean` shrinks them by about the cohort's size; this mean does not. With
    dense updates the two are the same."""
    if len(updates) == 0:
        return np.zeros(n, dtype=np.float32)
    weights = _weights(updates)
    total = weighted_scatter_sum(n, updates, weights)
    ones = [SparseUpdate(u.indices, np.ones(len(u.values)), u.samples) for u in updates]
    cover = weighted_scatter_sum(n, ones, weights)
    sent = cover > 0
    total[sent] /= cover[sent]
    return total.astype(np.float32)


def meta_update(theta: np.ndarray, updates: Sequence[SparseUpdate], beta: float) -> np.ndarray:
    """θ ← θ + β · Agg({Δ_i}); returns a new float32 array and leaves θ untouched."""
    agg = sparse_weighted_mean(len(theta), updates)
    return (theta + np.float32(beta) * agg).astype(np.float32)


def update_norm(values: np.ndarray) -> float:
    """‖Δ‖ in float64, so float32 values near 3e38 give their true norm instead of inf (NaN
    stays NaN)."""
    return float(np.linalg.norm(np.asarray(values, dtype=np.float64)))


def within_bound(norm: float, bound: float) -> bool:
    """True when an update of L2 norm `norm` may count under `bound` (0: no bound); a
    non-finite norm never may."""
    return math.isfinite(norm) and (bound <= 0 or norm <= bound)


def clamp_samples(update: SparseUpdate, budget: int) -> SparseUpdate:
    """The update weighted by at most `budget` samples (what its round asked it to use): the
    claimed count is the device's word, the budget is the service's."""
    if update.samples <= budget:
        return update
    return SparseUpdate(update.indices, update.values, max(0, int(budget)), update.weight)


def clip_update(update: SparseUpdate, max_norm: float) -> SparseUpdate:
    """The update scaled down to L2 norm `max_norm` when it is longer (unchanged otherwise)."""
    norm = update_norm(update.values)
    if max_norm <= 0 or norm <= max_norm:
        return update
    scaled = np.asarray(update.values, dtype=np.float64) * (max_norm / norm)
    return SparseUpdate(update.indices, scaled.astype(np.float32), update.samples, update.weight)


def cap_norm(theta: np.ndarray, limit: float) -> np.ndarray:
    """θ scaled down to L2 norm `limit` when it is longer (0: no limit); a new float32 array
    when scaled, θ itself otherwise."""
    norm = update_norm(theta)
    if limit <= 0 or norm <= limit:
        return theta
    return (np.asarray(theta, dtype=np.float64) * (limit / norm)).astype(np.float32)


def model_norm_bound(theta: np.ndarray, floor: float) -> float:
    """A bound on one update's norm that needs no history: ‖θ_g‖, or `floor` when θ_g is
    shorter. An honest round moves θ_g by a fraction of its length (at most 0.20 ‖θ_g‖ with
    TinyMetaFed and TinyReptile, 0.53 with Reptile and FedAvg, measured over the four use cases,
    `benchmarks/hostile.py norms`); an update as long as θ_g itself would replace the model."""
    return max(update_norm(theta), float(floor))


def median_norm_bound(norms: Sequence[float], factor: float) -> float:
    """`factor` × the median of recent accepted update norms."""
    return float(factor) * float(np.median(np.asarray(norms, dtype=np.float64)))


def all_finite(theta: np.ndarray) -> bool:
    """True when every entry of θ is finite (a model devices can use)."""
    return bool(np.all(np.isfinite(theta)))


def aggregate_mean(n: int, updates: Sequence[SparseUpdate], coverage: bool = False) -> np.ndarray:
    """Agg({Δ_i}): the sample-weighted mean of the updates (already clipped by the service's
    bounds, core.bounds), or with `coverage` (experimental, off by default) each coordinate's
    mean over the devices that sent it (`sparse_coverage_mean`)."""
    return sparse_coverage_mean(n, updates) if coverage else sparse_weighted_mean(n, updates)
