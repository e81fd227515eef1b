"""Cohort selection: which online devices train in a round."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sample_cohort(online: Sequence[str], k: int, rng: np.random.Generator) -> list[str]:
    """k distinct devices drawn uniformly from `online` (all of them when fewer are online)."""
    if k <= 0 or not online:
        return []
    if k >= len(online):
        return list(online)
    picks = rng.choice(len(online), size=k, replace=False)
    return [online[i] for i in sorted(picks)]
