"""Server-side aggregation maths: pure functions over sparse updates (brief section 2, step 4)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SparseUpdate:
    """A decoded device update: Δ at `indices` (ascending) with weight `samples`."""

    indices: np.ndarray
    values: np.ndarray
    samples: int


def outer_step(beta0: float, t: int, total_rounds: int) -> float:
    """Reptile's linearly decaying outer step β_t = β_0 (1 − t/T), t counted from 0."""
    if total_rounds <= 0:
        return beta0
    return beta0 * max(0.0, 1.0 - t / total_rounds)


def sparse_weighted_mean(n: int, updates: Sequence[SparseUpdate]) -> np.ndarray:
    """Σ_i w_i Δ_i / Σ_i w_i over dense length n; coordinates a device did not send count as 0.

    Weights are the devices' sample counts (all-zero counts fall back to equal weights).
    """
    total = np.zeros(n, dtype=np.float64)
    weights = np.array([u.samples for u in updates], dtype=np.float64)
    if len(updates) == 0:
        return total.astype(np.float32)
    if weights.sum() <= 0:
        weights = np.ones(len(updates))
    for w, u in zip(weights, updates, strict=True):
        np.add.at(total, np.asarray(u.indices, dtype=np.int64), w * np.asarray(u.values))
    return (total / weights.sum()).astype(np.float32)


def meta_update(theta: np.ndarray, updates: Sequence[SparseUpdate], beta: float) -> np.ndarray:
    """θ ← θ + β · Agg({Δ_i}); returns a new float32 array and leaves θ untouched."""
    agg = sparse_weighted_mean(len(theta), updates)
    return (theta + np.float32(beta) * agg).astype(np.float32)
