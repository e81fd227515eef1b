"""Named random streams: the generator of (seed, stream) draws one kind of thing, so that every
algorithm, the service and `tinymetafed evaluate` see the same draws for the same seed.

The ids are part of the published figures: changing one changes the benchmark results.
"""

from __future__ import annotations

import hashlib

import numpy as np

CURVE_EPISODES = 11
"""The new devices of the learning curve (bench) and of the service's evaluations."""

FINAL_EPISODES = 13
"""The new devices of the final metric (bench) and of `tinymetafed evaluate`."""


def named_stream(seed: int, stream: int) -> np.random.Generator:
    """The generator of one named stream for a seed."""
    return np.random.default_rng([seed, stream])


def stable_id(name: str) -> int:
    """A 64-bit integer from the name's UTF-8 bytes (BLAKE2b): the same on every machine and run
    (unlike Python's salted `hash`), and distinct for distinct names short of a 2^-64 collision."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def device_stream(seed: int, t: int, device_id: str) -> np.random.Generator:
    """The generator of one device's samples in round t: one independent stream per
    (seed, round, device), shared by the simulation, the simulated fleet and every algorithm."""
    return np.random.default_rng([seed, t, stable_id(device_id)])
