"""The use-case interface: what the harness needs from a data set to run federated meta-learning.

A *device* is a task. Training devices stream samples one at a time (online, batch size 1);
new devices, never seen during meta-training, give a few-shot *episode*: support samples to
adapt on and query samples to measure on.

Every use case cuts its data into three disjoint sets of devices (brief section 2, "Evaluation
standards"): meta-training devices (`device_ids`), validation devices (the learning curve and
every choice of settings, for every algorithm alike) and test devices (final figures only).
`new_device_episodes(count, rng, split)` draws episodes (broker_service.core.episode) from the
validation or the test devices. An episode names its *unit*, the independent thing a confidence
interval is taken over (a speaker, a day; the episode's own task when tasks are drawn
independently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from broker_service.core.episode import Episode

VALIDATION = "validation"
"""The new devices of the learning curve and of tuning."""

TEST = "test"
"""The new devices of the final figures, never used to choose anything."""

SPLITS = (VALIDATION, TEST)


def check_split(split: str) -> str:
    """`split` when it names a set of new devices; ValueError otherwise."""
    if split not in SPLITS:
        raise ValueError("split %r: expected one of %s" % (split, ", ".join(SPLITS)))
    return split


class DataMissingError(FileNotFoundError):
    """Raised when a use case's data is not where it was told to look; the message names both."""


@dataclass
class UseCase:
    """A data set cut into devices, with its default model, metric and target.

    Subclasses fill `device_ids` and implement `stream`, `new_device_episodes` and
    `split_summary`. `spec` is the JSON-able model spec (see device_agent.model); the training
    settings are in broker_service.core.hyperparams. `target` is the metric value that counts as
    "converged" for rounds-to-target on the validation curve, under the online protocol (lower
    is better for mse); each was set after tuning from seed 0's validation curves, at a level
    most federated runs reach (docs/methods.md), never from test devices.
    `FOLDS` > 1 means the devices are split in turn (cross-validation): the constructor takes
    `fold` in range(FOLDS), and every unit is a test unit in exactly one fold. `unit` names what
    an episode's unit is; `eval_shots` lists the shot counts the final figures are given for
    (None: the default). `OPTIONS` names the constructor's keyword options that are training
    settings too (broker_service.core.hyperparams), which the bench passes from its settings.
    """

    FOLDS = 1
    OPTIONS = ()

    name: str
    metric: str  # "mse" or "accuracy"
    spec: dict[str, Any]
    target: float
    device_ids: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    unit: str = "task"
    eval_shots: tuple[int | None, ...] = (None,)

    def stream(
        self, device_id: str, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the next `n` samples a training device sees (x float32, y as in Episode)."""
        raise NotImplementedError

    def new_device_episodes(
        self, count: int, rng: np.random.Generator, split: str = TEST, shots: int | None = None
    ) -> list[Episode]:
        """Return `count` few-shot episodes from the `split` devices (never used in training),
        with `shots` support samples per class (None: the use case's default)."""
        raise NotImplementedError

    def split_summary(self) -> dict[str, Any]:
        """What the training, validation and test devices are (names or counts), for the JSON."""
        raise NotImplementedError

    @property
    def higher_is_better(self) -> bool:
        """True for accuracy-like metrics, False for errors such as mse."""
        return self.metric != "mse"
