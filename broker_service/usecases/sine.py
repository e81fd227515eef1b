"""Sine-wave regression: a device is one wave A·sin(x + φ), meta-learning's synthetic benchmark.

A ∈ [0.1, 5], φ ∈ [0, 2π], x ∈ [−5, 5] (brief section 3). Training devices and new devices are
drawn from disjoint seeds, so a new device's wave was never seen in meta-training.
"""

from __future__ import annotations

import numpy as np

from broker_service.usecases.base import Episode, UseCase
from device_agent.specs import sine_spec

X_SCALE = 0.2  # inputs are fed as x/5, in [-1, 1]: a device normalises its sensor range

SPEC = sine_spec()


class SineUseCase(UseCase):
    """A fleet of `fleet_size` sine devices; new devices come from a separate random stream."""

    def __init__(self, fleet_size: int = 100, seed: int = 0, shots: int = 10, query: int = 100):
        super().__init__(name="sine", metric="mse", spec=SPEC, target=1.5)
        rng = np.random.default_rng([seed, 1])
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

    def new_device_episodes(self, count: int, rng: np.random.Generator) -> list[Episode]:
        waves = np.random.default_rng([self.seed, 2])
        episodes = []
        for i in range(count):
            a, p = waves.uniform(0.1, 5.0), waves.uniform(0.0, 2 * np.pi)
            sx, sy = _wave_samples(a, p, self.shots, rng)
            qx = np.linspace(-5.0, 5.0, self.query, dtype=np.float32).reshape(-1, 1)
            qy = (a * np.sin(qx + p)).astype(np.float32)
            qx = qx * np.float32(X_SCALE)
            episodes.append(Episode("sine-new-%03d" % i, sx, sy, qx, qy))
        return episodes


def _wave_samples(
    a: float, p: float, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n samples of one wave; the model sees x scaled by X_SCALE into [-1, 1]."""
    x = rng.uniform(-5.0, 5.0, (n, 1)).astype(np.float32)
    return x * np.float32(X_SCALE), (a * np.sin(x + p)).astype(np.float32)
