"""Smart-building presence detection (UCI Occupancy): a device is one calendar day of one room.

The three files `datatraining.txt`, `datatest.txt`, `datatest2.txt` (one row a minute, Feb 2015)
are merged, sorted by time and grouped by date; days with fewer than `min_rows` rows are dropped.
The days are split chronologically (`split_days`): the last `test_fraction` are the test days,
the `validation_fraction` before them the validation days, the rest the meta-training days — so
a new device is a day that meta-training never saw and that comes after every training day, as
in a deployment. With the UCI files: 9 training days (2-10 Feb 2015), 3 validation days
(11-13 Feb) and 5 test days (14-18 Feb, of which the weekend 14-15 Feb is never occupied and
18 Feb almost never). Episodes name their day as their unit: confidence intervals are over days.

Features are the 5 sensor channels (Temperature, Humidity, Light, CO2, HumidityRatio),
standardized with the mean and std of the training days only (recorded in `preprocessing`);
the label is Occupancy in {0, 1}.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from broker_service.usecases.base import DataMissingError, UnitsUseCase, standardize
from device_agent.specs import occupancy_spec

FILES = ("datatraining.txt", "datatest.txt", "datatest2.txt")
CHANNELS = ("Temperature", "Humidity", "Light", "CO2", "HumidityRatio")
LABEL = "Occupancy"
EXPECTED = "occupancy/{" + ",".join(FILES) + "}"

SPEC = occupancy_spec()


@dataclass(frozen=True)
class Readings:
    """All rows sorted by time: timestamps (str), day (YYYY-MM-DD), sensors (n, 5), labels (n,)."""

    times: np.ndarray
    days: np.ndarray
    sensors: np.ndarray
    labels: np.ndarray


class OccupancyUseCase(UnitsUseCase):
    """Training devices are the earlier days; validation and test devices the later ones.

    The split is chronological, so `seed` does not change it (it is accepted, like every use
    case's, for a uniform interface); sampling is driven by the rng given to each call.
    """

    def __init__(
        self,
        data_dir: str | Path | None,
        seed: int = 0,
        shots: int = 20,
        query: int = 400,
        min_rows: int = 200,
        validation_fraction: float = 0.2,
        test_fraction: float = 0.3,
    ):
        super().__init__(name="occupancy", metric="accuracy", spec=SPEC, target=0.975)
        self.unit = "day"
        data = load_readings(find_files(data_dir))
        parts = split_days(data.days, min_rows, validation_fraction, test_fraction)
        x, mean, std = standardize(data.sensors, np.isin(data.days, parts[0]))
        self.hold_out(data.days, parts, x, data.labels)
        self.shots, self.query, self.seed = shots, query, seed
        self.preprocessing = {
            "channels": list(CHANNELS),
            "mean": mean.tolist(),
            "std": std.tolist(),
            "standardize": "x = (sensor - mean[channel]) / std[channel], from training days only",
        }

    def support_query(
        self, rows: np.ndarray, shots: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """`shots` support rows of the day (stratified by class when it has both) and up to
        `query` of its other rows (x [n, 5] float32, y int64 in {0, 1})."""
        support = stratified_sample(rows, self.y[rows], shots, rng)
        rest = np.setdiff1d(rows, support)
        return support, rng.choice(rest, min(self.query, len(rest)), replace=False)

    def split_summary(self) -> dict:
        """The days of each split, with the share of occupied minutes of each day."""
        return {
            part: {d: round(float(self.y[self.rows[d]].mean()), 3) for d in days}
            for part, days in self.units.items()
        }


def find_files(data_dir: str | Path | None) -> list[Path]:
    """Return the three data files under `data_dir` (the folder containing `occupancy/`, or the
    `occupancy/` folder itself). Raises DataMissingError naming what is missing and where."""
    if data_dir is None:
        raise DataMissingError(
            f"occupancy use case: no data_dir given; expected {EXPECTED} under it"
        )
    root = Path(data_dir)
    for folder in (root / "occupancy", root):
        paths = [folder / name for name in FILES]
        if all(p.is_file() for p in paths):
            return paths
    missing = [str(root / "occupancy" / n) for n in FILES if not (root / "occupancy" / n).is_file()]
    raise DataMissingError(
        f"occupancy use case: expected {EXPECTED} under data_dir {root}"
        f" (missing: {', '.join(missing)})"
    )


def load_readings(paths: list[Path]) -> Readings:
    """Merge the files, drop duplicate timestamps and sort by time."""
    rows: dict[str, tuple[list[float], int]] = {}
    for path in paths:
        for time, sensors, label in _read_csv(path):
            rows.setdefault(time, (sensors, label))
    times = sorted(rows)
    return Readings(
        times=np.array(times),
        days=np.array([t[:10] for t in times]),
        sensors=np.array([rows[t][0] for t in times], dtype=np.float64),
        labels=np.array([rows[t][1] for t in times], dtype=np.int64),
    )


def _read_csv(path: Path) -> list[tuple[str, list[float], int]]:
    """Parse one file: a header of names, then rows that may carry an extra leading row id."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader)]
        columns = [header.index(c) for c in CHANNELS]
        date, label = header.index("date"), header.index(LABEL)
        out = []
        for row in reader:
            if not row:
                continue
            row = row[len(row) - len(header) :]
            time = _iso_time(row[date])
            out.append((time, [float(row[c]) for c in columns], int(float(row[label]))))
    return out


def _iso_time(text: str) -> str:
    """Normalise a timestamp to `YYYY-MM-DD HH:MM:SS` so that string order is time order."""
    return datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").strftime("%Y-%m-%d %H:%M:%S")


def split_days(
    days: np.ndarray, min_rows: int, validation_fraction: float, test_fraction: float
) -> tuple[list[str], list[str], list[str]]:
    """Keep days with at least `min_rows` rows and split them chronologically: the last
    `test_fraction` (at least one) are the test days, the `validation_fraction` before them (at
    least one) the validation days. Returns (training, validation, test), each in order."""
    names, counts = np.unique(days, return_counts=True)
    kept = [str(d) for d, c in zip(names, counts, strict=True) if c >= min_rows]
    if len(kept) < 3:
        raise ValueError(f"occupancy: only {len(kept)} day(s) with >= {min_rows} rows, need 3")
    n_test = min(len(kept) - 2, max(1, int(round(test_fraction * len(kept)))))
    n_val = min(len(kept) - 1 - n_test, max(1, int(round(validation_fraction * len(kept)))))
    train_end = len(kept) - n_test - n_val
    return kept[:train_end], kept[train_end:-n_test], kept[-n_test:]


def stratified_sample(
    rows: np.ndarray, labels: np.ndarray, shots: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw `shots` rows without replacement, each class in proportion to its frequency but at
    least one per class present; plain random when only one class is present. Shuffled."""
    shots = min(shots, len(rows))
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        return rng.choice(rows, shots, replace=False)
    quota = _quotas(counts, shots)
    picks = [
        rng.choice(rows[labels == c], q, replace=False) for c, q in zip(classes, quota, strict=True)
    ]
    return rng.permutation(np.concatenate(picks))


def _quotas(counts: np.ndarray, shots: int) -> np.ndarray:
    """Per-class sample counts summing to `shots`: proportional, at least 1, at most available."""
    quota = np.clip(np.floor(shots * counts / counts.sum()), 1, counts).astype(np.int64)
    while quota.sum() < shots:
        room = np.where(quota < counts, counts / quota, -1.0)
        quota[int(np.argmax(room))] += 1
    while quota.sum() > shots:
        quota[int(np.argmax(quota))] -= 1
    return quota
