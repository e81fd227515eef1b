"""Sine-wave regression: a device is one wave A·sin(x + φ), meta-learning's synthetic benchmark.

A ∈ [0.1, 5], φ ∈ [0, 2π], x ∈ [−5, 5] (brief section 3). Training, validation and test waves
come from three separate random streams of the seed, so a validation or test wave was never
seen in meta-training and the learning curve never measures a test wave.
"""

from __future__ import annotations

import numpy as np

from broker_service.core.episode import Episode
from broker_service.core.streams import named_stream
from broker_service.usecases.base import TEST, VALIDATION, UseCase, check_split
from device_agent.specs import sine_spec

X_SCALE = 0.2  # inputs are fed as x/5, in [-1, 1]: a device normalises its sensor range

SPEC = sine_spec()

# the named random streams of the waves (core.streams.named_stream)
TRAINING_WAVES = 1
WAVES = {TEST: 2, VALIDATION: 3}


class SineUseCase(UseCase):
    """A fleet of `fleet_size` sine devices; validation and test waves each from their own
    random stream."""

    def __init__(self, fleet_size: int = 100, seed: int = 0, shots: int = 10, query: int = 100):
        super().__init__(name="sine", metric="mse", spec=SPEC, target=1.5)
        rng = named_stream(seed, TRAINING_WAVES)
        self.amplitude = rng.uniform(0.1, 5.0, fleet_size)
        self.phase = rng.uniform(0.0, 2 * np.pi, fleet_size)
        self.device_ids = ["sine-%03d" % i for i in range(fleet_size)]
        self.seed = seed
        self.shots = shots
        self.query = query
        self.preprocessing = {"x_range": [-5.0, 5.0], "x_scale": X_SCALE}

    def stream(
        self, device_id: str, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        i = self.device_ids.index(device_id)
        return _wave_samples(self.amplitude[i], self.phase[i], n, rng)

    def new_device_episodes(
        self, count: int, rng: np.random.Generator, split: str = TEST, shots: int | None = None
    ) -> list[Episode]:
        """`count` waves of the split, each with `shots` random support points and the wave on
        an even grid of `query` points as query."""
        waves = named_stream(self.seed, WAVES[check_split(split)])
        episodes = []
        for i in range(count):
            a, p = waves.uniform(0.1, 5.0), waves.uniform(0.0, 2 * np.pi)
            sx, sy = _wave_samples(a, p, shots or self.shots, rng)
            qx = np.linspace(-5.0, 5.0, self.query, dtype=np.float32).reshape(-1, 1)
            qy = (a * np.sin(qx + p)).astype(np.float32)
            qx = qx * np.float32(X_SCALE)
            episodes.append(Episode(self.episode_id(split, i), sx, sy, qx, qy))
        return episodes

    def split_summary(self) -> dict:
        """Wave counts and the random streams they come from."""
        return {
            "train": "%d waves, stream [seed, %d]" % (len(self.device_ids), TRAINING_WAVES),
            "validation": "waves of stream [seed, %d]" % WAVES[VALIDATION],
            "test": "waves of stream [seed, %d]" % WAVES[TEST],
        }


def _wave_samples(
    a: float, p: float, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n samples of one wave; the model sees x scaled by X_SCALE into [-1, 1]."""
    x = rng.uniform(-5.0, 5.0, (n, 1)).astype(np.float32)
    return x * np.float32(X_SCALE), (a * np.sin(x + p)).astype(np.float32)
