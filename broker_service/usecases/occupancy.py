"""Smart-building presence detection (UCI Occupancy): a device is one calendar day of one room.

The three files `datatraining.txt`, `datatest.txt`, `datatest2.txt` (one row a minute, Feb 2015)
are merged, sorted by time and grouped by date; days with fewer than `min_rows` rows are dropped.
The last `new_fraction` of days (chronologically) are the new devices, so a new device is a day
that meta-training never saw and that comes after all training days — as in a deployment.

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

from broker_service.usecases.base import DataMissingError, Episode, UseCase
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


class OccupancyUseCase(UseCase):
    """Training devices are the earlier days; new devices are the last `new_fraction` of days.

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
        new_fraction: float = 0.3,
    ):
        super().__init__(name="occupancy", metric="accuracy", spec=SPEC, target=0.99)
        data = load_readings(find_files(data_dir))
        self.train_days, self.new_days = split_days(data.days, min_rows, new_fraction)
        mean, std = _stats(data.sensors[np.isin(data.days, self.train_days)])
        self.x = ((data.sensors - mean) / std).astype(np.float32)
        self.y = data.labels
        self.shots, self.query, self.seed = shots, query, seed
        self._rows = {d: np.flatnonzero(data.days == d) for d in self.train_days + self.new_days}
        self.device_ids = [f"occupancy-{d}" for d in self.train_days]
        self.preprocessing = {
            "channels": list(CHANNELS),
            "mean": mean.tolist(),
            "std": std.tolist(),
            "standardize": "x = (sensor - mean[channel]) / std[channel], from training days only",
        }

    def stream(
        self, device_id: str, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return `n` random rows of the device's day (x [n, 5] float32, y int64 in {0, 1})."""
        day = device_id.removeprefix("occupancy-")
        if day not in self.train_days:
            raise KeyError(f"occupancy: {device_id!r} is not a training device")
        rows = rng.choice(self._rows[day], n)
        return self.x[rows], self.y[rows]

    def new_device_episodes(self, count: int, rng: np.random.Generator) -> list[Episode]:
        """Return `count` episodes cycling over the held-out days: `shots` support rows
        (stratified by class when the day has both) and up to `query` of the day's other rows."""
        episodes = []
        for i in range(count):
            day = self.new_days[i % len(self.new_days)]
            rows = self._rows[day]
            support = stratified_sample(rows, self.y[rows], self.shots, rng)
            rest = np.setdiff1d(rows, support)
            query = rng.choice(rest, min(self.query, len(rest)), replace=False)
            episodes.append(
                Episode(
                    f"occupancy-new-{day}-{i:03d}",
                    self.x[support],
                    self.y[support],
                    self.x[query],
                    self.y[query],
                )
            )
        return episodes


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


def split_days(days: np.ndarray, min_rows: int, new_fraction: float) -> tuple[list[str], list[str]]:
    """Keep days with at least `min_rows` rows; the last `new_fraction` of them (at least one)
    are held out. Returns (training days, new days), each in chronological order."""
    names, counts = np.unique(days, return_counts=True)
    kept = [str(d) for d, c in zip(names, counts, strict=True) if c >= min_rows]
    if len(kept) < 2:
        raise ValueError(f"occupancy: only {len(kept)} day(s) with >= {min_rows} rows")
    n_new = min(len(kept) - 1, max(1, int(round(new_fraction * len(kept)))))
    return kept[:-n_new], kept[-n_new:]


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


def _stats(sensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (std 0 replaced by 1)."""
    std = sensors.std(axis=0)
    return sensors.mean(axis=0), np.where(std > 0, std, 1.0)
