"""Named random streams: the generator of (seed, stream) draws one kind of thing, so that every
algorithm, the service and `tinymetafed evaluate` see the same draws for the same seed.

The ids are part of the published figures: changing one changes the benchmark results.
"""

from __future__ import annotations

import numpy as np

CURVE_EPISODES = 11
"""The new devices of the learning curve (bench) and of the service's evaluations."""

FINAL_EPISODES = 13
"""The new devices of the final metric (bench) and of `tinymetafed evaluate`."""


def named_stream(seed: int, stream: int) -> np.random.Generator:
    """The generator of one named stream for a seed."""
    return np.random.default_rng([seed, stream])
