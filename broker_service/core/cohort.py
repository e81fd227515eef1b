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


def round_cohort(devices: Sequence[str], k: int, seed: int, t: int) -> list[str]:
    """Round t's first cohort, drawn from the sorted devices with the generator of
    (seed, t, attempt 0): the same in the simulation and the service, and after a restart."""
    return sample_cohort(sorted(devices), k, np.random.default_rng([seed, t, 0]))
