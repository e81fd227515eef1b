"""The use-case interface: what the harness needs from a data set to run federated meta-learning.

A *device* is a task. Training devices stream samples one at a time (online, batch size 1);
new devices, never seen during meta-training, give a few-shot *episode*: support samples to
adapt on and query samples to measure on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Episode:
    """A new device's data: adapt on (support_x, support_y), measure on (query_x, query_y).

    x arrays have shape (n, *input_shape) and dtype float32; y arrays are float32 of shape
    (n, outputs) for regression and int64 of shape (n,) (class indices) for classification.
    """

    device_id: str
    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray


class DataMissingError(FileNotFoundError):
    """Raised when a use case's data is not where it was told to look; the message names both."""


@dataclass
class UseCase:
    """A data set cut into devices, with its default model, metric and target.

    Subclasses fill `device_ids` and implement `stream` and `new_device_episodes`.
    `spec` is the JSON-able model spec (see device_agent.model); the training settings are in
    broker_service.core.hyperparams. `target` is the metric value that counts as "converged"
    for rounds-to-target (lower is better for mse).
    """

    name: str
    metric: str  # "mse" or "accuracy"
    spec: dict[str, Any]
    target: float
    device_ids: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def stream(
        self, device_id: str, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the next `n` samples a training device sees (x float32, y as in Episode)."""
        raise NotImplementedError

    def new_device_episodes(self, count: int, rng: np.random.Generator) -> list[Episode]:
        """Return `count` few-shot episodes from devices never used in training."""
        raise NotImplementedError

    @property
    def higher_is_better(self) -> bool:
        """True for accuracy-like metrics, False for errors such as mse."""
        return self.metric != "mse"
