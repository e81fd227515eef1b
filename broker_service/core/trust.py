"""Per-device trust: how far each device's updates, remembered over its rounds, agree with what
most devices' updates point to, and the weight that gives its update (brief section 2b;
docs/trust.md).

In Reptile a device's update is its own task's direction plus a share of the meta-step that
all honest devices have in common; the task part is the larger (one honest sine update in five
points against the consensus below, `benchmarks/hostile.py agreement`), so one update says
little. A device keeps its task, and what stands out is a reversing device's sign against the
majority, round after round. So:

- Each device keeps a *history*: a decaying sum of its clipped updates,
  h ← (1 − `rate`) h + S(Δ), where S count-sketches the update into `SKETCH` numbers (each
  coordinate of θ_g is added, with a fixed ±1 sign, to one of `SKETCH` buckets; inner products
  are kept in expectation), so the state per device is small whatever the model's size.
- The *consensus* is the coordinate-wise median, over the last `RECENT` accepted updates, of
  their senders' histories (as each update left them) scaled to length 1: one vote an update,
  so while fewer than half of the recent updates are hostile it lies with the honest devices,
  whatever the hostile ones send and however many ids they use. It is built from the devices'
  own histories, not from an aggregate the hostile devices helped make (an earlier reference,
  the moving average of the aggregated steps, was turned round by 4 of 20 reversing devices,
  after which every honest device disagreed with it and lost its weight).
- A device's *agreement* is the cosine between its history, this round's update in it, and the
  consensus; its update's weight is clip(1 + agreement / `full`, 0, 1). Only disagreement
  costs weight: a device of an unusual task agrees little, and must not be pushed out for it.
- A device's k-th update counts min(1, k / `probation`) of that weight: one update says little
  about its sender, so a newcomer earns its say over its first updates, and a device that comes
  back under a fresh id every round never counts more than 1 / `probation` (all devices are
  newcomers when a session starts, and equal shares change nothing then). The service's bounds
  also clip an update weighed w < 1 to w × the clip bound (core.bounds, `trust_clip`).

State: per device its history (the direction as `SKETCH` float16 numbers and its length), its
last agreement, its count of updates and the round it was last seen, at most `MAX_DEVICES`
devices (the least recently seen is forgotten first; about 0.8 KB each in the checkpoint, 2 KB
in memory), and the `RECENT` histories of the consensus, all kept in the service's checkpoint,
so a restart does not forgive anyone.
"""

from __future__ import annotations

import base64
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from broker_service.core.aggregate import SparseUpdate

RATE = 0.02
"""Default forgetting rate of a device's history (a history spans about its last 50 rounds);
0 turns trust off. Chosen with FULL on sine's validation devices, clean and with 4 of 20
devices reversing (`benchmarks/hostile.py trust-sweep`, docs/trust.md)."""
FULL = 0.2
"""Default disagreement (a negative agreement of this size) at which a device stops counting."""
PROBATION = 3
"""Default `trust_probation`: a device's k-th update counts min(1, k / PROBATION) of its trust
weight, so a newcomer earns its say over its first updates (1: no probation). One update says
little about a device (its agreement spreads widely), and a device that comes back under a
fresh id every round would otherwise count fully each time. Chosen on sine's validation
devices with the trust clip (`benchmarks/hostile.py trust-sweep`, docs/trust.md)."""
SKETCH = 256
"""Numbers in a device's history (the sketch of its summed updates)."""
MAX_DEVICES = 10_000
"""Devices whose history is remembered; beyond, the least recently seen is forgotten."""
RECENT = 200
"""Accepted updates whose senders' histories (as each update left them) make the consensus: one
vote an update, so a device's say is its share of the recent updates however many ids it
uses (a device re-enrolling under a fresh id every round must not outvote the fleet)."""
MIN_DEVICES = 3
"""Histories needed before there is a consensus (before, every device counts fully)."""
LAYOUT_SEED = 0x7157
"""Seeds the sketch's buckets and signs: the same for every run, so a restart sketches alike."""


def sketch_layout(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The bucket (0 … SKETCH − 1) and the sign (±1) of each of θ_g's n coordinates."""
    rng = np.random.default_rng([LAYOUT_SEED, int(n)])
    return rng.integers(0, SKETCH, int(n)), rng.choice(np.array([-1.0, 1.0]), int(n))


def sketches(updates: Sequence[SparseUpdate], layout: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """S(Δ) of each update, one row each (float64): its values, signed, summed into their
    coordinates' buckets; one pass over all the round's entries."""
    bucket, sign = layout
    sizes = [len(u.indices) for u in updates]
    if not sum(sizes):
        return np.zeros((len(updates), SKETCH))
    index = np.concatenate([np.asarray(u.indices, dtype=np.int64) for u in updates])
    values = np.concatenate([np.asarray(u.values, dtype=np.float64) for u in updates])
    row = np.repeat(np.arange(len(updates)), sizes)
    flat = np.bincount(
        row * SKETCH + bucket[index], sign[index] * values, minlength=len(updates) * SKETCH
    )
    return flat.reshape(len(updates), SKETCH)


History = tuple[np.ndarray, float]
"""A history as its direction (unit length, float16) and its length: what the checkpoint keeps,
so a restarted service weighs exactly as one that ran on, at any scale of the updates."""


def next_histories(
    histories: Sequence[History | None], sketched: np.ndarray, rate: float
) -> list[History]:
    """(1 − rate) · h + S(Δ) for each history and its row of `sketched` (a zero history for
    None)."""
    zero = np.zeros(SKETCH, dtype=np.float16)
    before = np.stack([zero if h is None else h[0] for h in histories]).astype(np.float64)
    before *= np.array([0.0 if h is None else h[1] for h in histories])[:, None]
    total = (1.0 - rate) * before + np.asarray(sketched, dtype=np.float64)
    lengths = np.linalg.norm(total, axis=1)
    good = np.isfinite(lengths) & (lengths > 0)
    directions = np.zeros_like(total)
    directions[good] = total[good] / lengths[good, None]
    kept = directions.astype(np.float16)
    return [(row, float(n) if ok else 0.0) for row, n, ok in zip(kept, lengths, good, strict=True)]


def consensus(histories: Iterable[History]) -> np.ndarray | None:
    """The coordinate-wise median of the non-zero histories' directions; None when fewer than
    MIN_DEVICES have one."""
    rows = [direction for direction, length in histories if length > 0]
    if len(rows) < MIN_DEVICES:
        return None
    return np.median(np.stack(rows).astype(np.float32).T, axis=1).astype(np.float64)


def agreements(histories: Sequence[History], reference: np.ndarray) -> list[float]:
    """The cosine between each history and the reference (0 for a zero history)."""
    rows = np.stack([direction for direction, _ in histories]).astype(np.float64)
    denom = np.linalg.norm(rows, axis=1) * float(np.linalg.norm(reference))
    dots = rows @ np.asarray(reference, dtype=np.float64)
    good = np.isfinite(denom) & (denom > 0)
    return [float(d / n) if ok else 0.0 for d, n, ok in zip(dots, denom, good, strict=True)]


def trust_weight(agreement: float, full: float) -> float:
    """The weight of a device's update: 1 at an agreement of 0 or more, falling linearly to 0
    at −`full` (clip(1 + agreement / full, 0, 1)); only disagreement costs weight."""
    if full <= 0:
        return 1.0 if agreement >= 0 else 0.0
    return min(1.0, max(0.0, 1.0 + agreement / full))


def _highest_index(updates: Sequence[SparseUpdate]) -> int:
    """The highest coordinate any of the updates sent (−1 for none)."""
    if not updates:
        return -1
    index = np.concatenate([np.asarray(u.indices, dtype=np.int64) for u in updates])
    return int(index.max(initial=-1))


class DeviceTrust:
    """Every remembered device's history and last agreement; the weights they give a round's
    updates (`weigh`), made permanent once the round's step is taken (`commit`), and which
    devices were down-weighted in the last round. `rate=0` turns trust off (every weight 1)."""

    def __init__(
        self,
        rate: float = RATE,
        full: float = FULL,
        saved: Mapping | None = None,
        max_devices: int = MAX_DEVICES,
        probation: int = PROBATION,
    ) -> None:
        self.rate = float(rate)
        self.full = float(full)
        self.probation = max(1, int(probation))
        self.max_devices = int(max_devices)
        self.n = 0  # θ_g's length the histories are sketched from
        self.histories: dict[str, History] = {}
        self.trust: dict[str, tuple[float, int]] = {}  # device: (last agreement, round seen)
        self.updates: dict[str, int] = {}  # device: its updates in the history
        self.pending: dict[str, tuple[History, float | None, int, int]] = {}
        self.downweighted: list[int] = []
        self._layout: tuple[np.ndarray, np.ndarray] | None = None
        self._encoded: dict[str, str] = {}  # each history's direction as the checkpoint has it
        self.recent: deque[tuple[History, str]] = deque(maxlen=RECENT)  # and its encoding
        self.restore(saved or {})

    @property
    def enabled(self) -> bool:
        """True when trust weighs updates."""
        return self.rate > 0

    def of(self, device: str) -> float:
        """A device's last agreement (0 when never seen: no evidence either way)."""
        return self.trust.get(device, (0.0, -1))[0]

    def restore(self, saved: Mapping) -> None:
        """Take over saved state (`to_dict`'s, e.g. from a checkpoint): entries that are not a
        finite agreement in [-1, 1], a round number, a history (a finite length and SKETCH
        finite float16) and optionally a count of updates are skipped (state written by another
        version is not taken over); a device saved without its count has served its
        probation."""
        if not isinstance(saved, Mapping):
            return
        n, devices = saved.get("n"), saved.get("devices", {})
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            return
        if saved.get("sketch") != SKETCH or not isinstance(devices, Mapping):
            return
        self._reset(n)
        for device, entry in devices.items():
            parsed = _entry(entry) if isinstance(device, str) else None
            if parsed is not None:
                agreement, seen, history, count = parsed
                self.trust[device] = (agreement, seen)
                self.histories[device] = history
                self.updates[device] = self.probation if count is None else count
                self._encoded[device] = entry[3]
        self._forget()
        recent = saved.get("recent", [])
        for entry in recent if isinstance(recent, list) else ():
            history = _history(*entry) if isinstance(entry, list) and len(entry) == 2 else None
            if history is not None:
                self.recent.append((history, entry[1]))

    def to_dict(self) -> dict:
        """{"n": θ_g's length, "sketch": SKETCH, "devices": {device: [last agreement, round
        seen, the history's length, base64 of its direction as little-endian float16, the
        updates it holds]},
        "recent": [[length, base64], ...] (the consensus's histories, oldest first)} (what the
        checkpoint keeps)."""
        devices = {
            device: [
                agreement,
                seen,
                self.histories[device][1],
                self._encoded[device],
                self.updates[device],
            ]
            for device, (agreement, seen) in sorted(self.trust.items())
        }
        recent = [[history[1], encoded] for history, encoded in self.recent]
        return {"n": self.n, "sketch": SKETCH, "devices": devices, "recent": recent}

    def weigh(
        self, devices: Sequence[str], updates: Sequence[SparseUpdate], t: int, n: int
    ) -> list[float]:
        """Each update's weight: its device's trust weight (from its history with the update in
        it against the consensus of every history; 1 while there is no consensus) times its
        probation share min(1, k / probation) for its k-th update. Kept pending until `commit`;
        `downweighted` lists the positions whose trust weight is below 1 (a newcomer's
        probation alone does not put it there). `n` is θ_g's length: histories of another
        model's length are forgotten."""
        if not self.enabled or not updates:
            self.downweighted, self.pending = [], {}
            return [1.0] * len(updates)
        highest = _highest_index(updates)
        if n != self.n or highest >= n:
            self._reset(max(n, highest + 1))
        before = [self.histories.get(d) for d in devices]
        after = next_histories(before, sketches(updates, self._sketch_layout()), self.rate)
        reference = consensus([h for h, _ in self.recent] + after)
        found: list[float | None] = [None] * len(devices)
        if reference is not None:
            found = list(agreements(after, reference))
        weights, self.pending, self.downweighted = [], {}, []
        for i, (device, history, agreement) in enumerate(zip(devices, after, found, strict=True)):
            count = self.updates.get(device, 0) + 1
            self.pending[device] = (history, agreement, int(t), count)
            weight = 1.0 if agreement is None else trust_weight(agreement, self.full)
            if weight < 1.0:
                self.downweighted.append(i)
            weights.append(weight * min(1.0, count / self.probation))
        return weights

    def commit(self) -> None:
        """The round's step was taken: keep its devices' histories and agreements."""
        for device, (history, found, t, count) in self.pending.items():
            self.histories[device] = history
            self.trust[device] = (self.of(device) if found is None else found, t)
            self.updates[device] = count
            raw = np.asarray(history[0], dtype="<f2").tobytes()
            self._encoded[device] = base64.b64encode(raw).decode()
            self.recent.append((history, self._encoded[device]))
        self.pending = {}
        self._forget()

    def _sketch_layout(self) -> tuple[np.ndarray, np.ndarray]:
        if self._layout is None or len(self._layout[0]) != self.n:
            self._layout = sketch_layout(self.n)
        return self._layout

    def _reset(self, n: int) -> None:
        self.n, self.histories, self.trust, self._encoded = int(n), {}, {}, {}
        self.updates = {}
        self.recent.clear()

    def _forget(self) -> None:
        if len(self.trust) <= self.max_devices:
            return
        oldest = sorted(self.trust, key=lambda d: (self.trust[d][1], d))
        for device in oldest[: len(self.trust) - self.max_devices]:
            del self.trust[device], self.histories[device], self._encoded[device]
            del self.updates[device]


def _entry(entry) -> tuple[float, int, History, int | None] | None:
    """A saved [agreement, round seen, length, base64 float16 direction(, updates)], checked
    (updates None when not saved); None when it is not one."""
    if not isinstance(entry, (list, tuple)) or len(entry) not in (4, 5):
        return None
    agreement, seen, length, encoded = entry[:4]
    count = entry[4] if len(entry) == 5 else None
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        return None
    if isinstance(agreement, bool) or not isinstance(agreement, (int, float)):
        return None
    if isinstance(seen, bool) or not isinstance(seen, int):
        return None
    if not (math.isfinite(agreement) and -1.0 <= agreement <= 1.0):
        return None
    history = _history(length, encoded)
    return None if history is None else (float(agreement), seen, history, count)


def _history(length, encoded) -> History | None:
    """A saved history (its length and base64 float16 direction), checked; None when it is
    not one."""
    if isinstance(length, bool) or not isinstance(length, (int, float)):
        return None
    if not (math.isfinite(length) and length >= 0) or not isinstance(encoded, str):
        return None
    try:
        direction = np.frombuffer(base64.b64decode(encoded, validate=True), dtype="<f2")
    except ValueError:
        return None
    if len(direction) != SKETCH or not np.all(np.isfinite(direction)):
        return None
    return direction.astype(np.float16), float(length)


def weighted(updates: Iterable[SparseUpdate], weights: Iterable[float]) -> list[SparseUpdate]:
    """The updates with their weight multiplied in; those of weight 0 are left out."""
    return [
        SparseUpdate(u.indices, u.values, u.samples, u.weight * float(w))
        for u, w in zip(updates, weights, strict=True)
        if w > 0
    ]
