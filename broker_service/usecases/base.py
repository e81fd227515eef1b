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

The sampling every use case shares lives here too: the names of new devices (`episode_id`),
support and query drawn class by class (`per_class_split`), standardization on the training
devices only (`standardize`), and `UnitsUseCase`, for data sets whose devices are units of one
table of samples (a speaker's recordings, a day's rows).
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

    def episode_id(self, split: str, i: int, unit: str = "") -> str:
        """The name of the split's i-th new device: `<name>-new[-<unit>]-<i:03d>` for the test
        split, `<name>-val[-<unit>]-<i:03d>` for validation."""
        kind = "new" if split == TEST else "val"
        return f"{self.name}-{kind}{'-' + unit if unit else ''}-{i:03d}"


class UnitsUseCase(UseCase):
    """A use case whose devices are units (a speaker, a day) of one table of samples `x`, `y`.

    `units` names the training, validation and test units and `rows` each unit's rows.
    A training device (`<name>-<unit>`) streams random rows of its unit; the new devices of a
    split are its units taken in turn. Subclasses load the table, call `hold_out` and say how
    an episode's support and query rows are drawn (`support_query`); `shots` is the default
    number of support samples (per class where the subclass says so).
    """

    units: dict[str, list[str]]
    rows: dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray
    shots: int

    def hold_out(
        self,
        unit_of_row: np.ndarray,
        parts: tuple[list[str], list[str], list[str]],
        x: np.ndarray,
        y: np.ndarray,
    ) -> None:
        """Take the table (`x`, `y`, each row's unit) and the (training, validation, test)
        units; the training units become the devices."""
        self.units = dict(zip(("train", VALIDATION, TEST), parts, strict=True))
        self.rows = {u: np.flatnonzero(unit_of_row == u) for part in parts for u in part}
        self.x, self.y = x, y
        self.device_ids = [f"{self.name}-{u}" for u in parts[0]]

    def stream(
        self, device_id: str, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return `n` rows of the device's unit, drawn with replacement."""
        unit = device_id.removeprefix(self.name + "-")
        if unit not in self.units["train"]:
            raise KeyError(f"{self.name}: {device_id!r} is not a training device")
        rows = rng.choice(self.rows[unit], n)
        return self.x[rows], self.y[rows]

    def new_device_episodes(
        self, count: int, rng: np.random.Generator, split: str = TEST, shots: int | None = None
    ) -> list[Episode]:
        """Return `count` episodes cycling over the split's units, each named after its unit and
        counted in it, with support and query rows from `support_query`."""
        units = self.units[check_split(split)]
        episodes = []
        for i in range(count):
            unit = units[i % len(units)]
            support, query = self.support_query(self.rows[unit], shots or self.shots, rng)
            episodes.append(
                Episode(
                    self.episode_id(split, i, unit),
                    self.x[support],
                    self.y[support],
                    self.x[query],
                    self.y[query],
                    unit=unit,
                )
            )
        return episodes

    def support_query(
        self, rows: np.ndarray, shots: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """The support and query rows of an episode on one unit's `rows`."""
        raise NotImplementedError


def per_class_split(
    classes: list[np.ndarray], shots: int, rng: np.random.Generator, query: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle each class's members (in the order given); its first `shots` go to the support,
    the next `query` (None: all the others) to the query. Returns (support, support labels,
    query, query labels), each set shuffled, a label being the class's position in `classes`."""
    end = None if query is None else shots + query
    picks = [rng.permutation(members) for members in classes]
    support, support_labels = _shuffled([mine[:shots] for mine in picks], rng)
    query_rows, query_labels = _shuffled([mine[shots:end] for mine in picks], rng)
    return support, support_labels, query_rows, query_labels


def _shuffled(parts: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The parts' items in one shuffled array, with the position of each one's part."""
    labels = np.repeat(np.arange(len(parts), dtype=np.int64), [len(p) for p in parts])
    order = rng.permutation(len(labels))
    return np.concatenate(parts)[order], labels[order]


def standardize(values: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`values` standardized per channel (last axis) as float32, with the mean and std (a std
    of 0 counts as 1) of the rows selected by `train` (the training devices' only)."""
    flat = values[train].reshape(-1, values.shape[-1]).astype(np.float64)
    std = flat.std(axis=0)
    mean, std = flat.mean(axis=0), np.where(std > 0, std, 1.0)
    return ((values - mean) / std).astype(np.float32), mean, std
