"""Per-device trust: how far each device's updates agree with the direction the model is
moving, remembered across rounds, and the weight that gives its update (brief section 2b;
docs/security.md, "Device trust").

In Reptile an honest update points, on average, towards the meta-step. The service keeps the
*server momentum* m, an exponential moving average (rate `momentum_rate`) of the mean of the
updates it aggregated. Each round, a device's *agreement* is the cosine, on the coordinates it
sent, between its (clipped) update and m. A device's trust is an exponential moving average
(rate `rate`) of its agreements from `PRIOR` (no evidence) at its first update; the round's own
agreement is in it before the weight is taken. The weight is clip(1 + trust / `full`, 0, 1): a
device whose trust is not negative counts fully, one whose trust is −`full` or lower does not
count. Only disagreement costs weight: honest devices of unusual tasks agree little with m.

A slow `rate` matters: with faster ones, 4 of 20 reversing devices turned m round early on, the
honest devices then disagreed with it and lost their weight, and the model was captured
(`benchmarks/hostile.py trust-sweep`, docs/benchmarks.md).

State: m (one vector of θ_g's length) and one float and one round number per device, at most
`MAX_DEVICES` devices (the least recently seen is forgotten first); all of it is kept in the
service's checkpoint, so a restart does not forgive anyone.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from broker_service.core.aggregate import SparseUpdate

RATE = 0.0
"""Default EMA rate of the trust, the weight of the newest agreement: 0, trust off. When on,
0.02 (chosen by `benchmarks/hostile.py trust-sweep` on validation devices); it is off by default
because 4 of 20 reversing devices still captured the model on one sine seed of three
(docs/security.md, "Device trust")."""
FULL = 0.05
"""Default distrust at which a device stops counting (chosen with the rate)."""
MOMENTUM = 0.02
"""EMA rate of the server momentum, the direction agreements are measured against."""
PRIOR = 0.0
"""The trust of a device never seen: no evidence either way."""
MAX_DEVICES = 100_000
"""Devices whose trust is remembered; beyond, the least recently seen is forgotten."""


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    if denom == 0 or not math.isfinite(denom):
        return 0.0
    return float(np.dot(x, y) / denom)


def agreement(update: SparseUpdate, momentum: np.ndarray | None) -> float | None:
    """The cosine, on the update's coordinates, between it and the server momentum; None when
    there is no momentum yet or it is zero there (no evidence)."""
    if momentum is None:
        return None
    reference = np.asarray(momentum)[np.asarray(update.indices, dtype=np.int64)]
    if not np.any(reference):
        return None
    return _cosine(np.asarray(update.values), reference)


def next_momentum(momentum: np.ndarray | None, step: np.ndarray, rate: float) -> np.ndarray:
    """The momentum after a round that aggregated `step`: (1 − rate) · m + rate · step, or the
    step itself for the first round."""
    step = np.asarray(step, dtype=np.float32)
    if momentum is None:
        return step.copy()
    return ((1.0 - rate) * momentum + rate * step).astype(np.float32)


def _highest_index(updates: Sequence[SparseUpdate]) -> int:
    """The highest coordinate any of the updates sent (−1 for none)."""
    return max(
        (int(np.max(np.asarray(u.indices, dtype=np.int64), initial=-1)) for u in updates),
        default=-1,
    )


def next_trust(trust: float, agreement: float, rate: float) -> float:
    """The trust after one more agreement: (1 − rate) · trust + rate · agreement."""
    return (1.0 - rate) * trust + rate * agreement


def trust_weight(trust: float, full: float) -> float:
    """The weight of a device's update: 1 at a trust of 0 or more, falling linearly to 0 at a
    trust of −`full` (clip(1 + trust / full, 0, 1)); only disagreement costs weight."""
    if full <= 0:
        return 1.0 if trust >= 0 else 0.0
    return min(1.0, max(0.0, 1.0 + trust / full))


class DeviceTrust:
    """The trust of every device seen and the server momentum; the weights they give a round's
    updates (`weigh`), made permanent once the round's step is taken (`commit`), and which
    devices were down-weighted in the last round. `rate=0` turns trust off (every weight 1)."""

    def __init__(
        self,
        rate: float = RATE,
        full: float = FULL,
        momentum_rate: float = MOMENTUM,
        saved: Mapping | None = None,
        max_devices: int = MAX_DEVICES,
    ) -> None:
        self.rate = float(rate)
        self.full = float(full)
        self.momentum_rate = float(momentum_rate)
        self.max_devices = int(max_devices)
        self.trust: dict[str, tuple[float, int]] = {}
        self.momentum: np.ndarray | None = None
        self.pending: dict[str, tuple[float, int]] = {}
        self.downweighted: list[int] = []
        self.restore(saved or {})

    @property
    def enabled(self) -> bool:
        """True when trust weighs updates."""
        return self.rate > 0

    def restore(self, saved: Mapping) -> None:
        """Take over saved state (`to_dict`'s, e.g. from a checkpoint): device entries that are
        not a finite trust in [-1, 1] and a round number are skipped, and a momentum that is
        not finite float32 is dropped."""
        if not isinstance(saved, Mapping):
            return
        devices = saved.get("devices", {})
        for device, entry in devices.items() if isinstance(devices, Mapping) else ():
            if not isinstance(device, str) or not isinstance(entry, (list, tuple)):
                continue
            if len(entry) != 2:
                continue
            value, seen = entry
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if isinstance(seen, bool) or not isinstance(seen, int):
                continue
            if math.isfinite(value) and -1.0 <= value <= 1.0:
                self.trust[device] = (float(value), seen)
        self._forget()
        encoded = saved.get("momentum_f32_b64")
        if isinstance(encoded, str):
            try:
                momentum = np.frombuffer(base64.b64decode(encoded, validate=True), dtype="<f4")
            except ValueError:
                return
            if np.all(np.isfinite(momentum)):
                self.momentum = momentum.astype(np.float32)

    def to_dict(self) -> dict:
        """{"devices": {device: [trust, round last seen]}, "momentum_f32_b64": base64 of m as
        little-endian float32} (what the checkpoint keeps)."""
        out: dict = {"devices": {d: [v, seen] for d, (v, seen) in sorted(self.trust.items())}}
        if self.momentum is not None:
            raw = np.asarray(self.momentum, dtype="<f4").tobytes()
            out["momentum_f32_b64"] = base64.b64encode(raw).decode()
        return out

    def of(self, device: str) -> float:
        """A device's trust (PRIOR when never seen)."""
        return self.trust.get(device, (PRIOR, -1))[0]

    def weigh(self, devices: Sequence[str], updates: Sequence[SparseUpdate], t: int) -> list[float]:
        """Each update's weight, from its device's trust with this round's agreement in it
        (kept pending until `commit`); `downweighted` lists the positions weighted below 1.
        A device without evidence yet (no momentum) counts fully."""
        if not self.enabled:
            self.downweighted = []
            return [1.0] * len(updates)
        momentum = self.momentum
        if momentum is not None and len(momentum) <= _highest_index(updates):
            momentum = None  # another model's: no evidence
        self.pending = {}
        weights = []
        for device, update in zip(devices, updates, strict=True):
            found = agreement(update, momentum)
            if found is None:
                weights.append(1.0 if device not in self.trust else self._weight(device))
                continue
            value = next_trust(self.of(device), found, self.rate)
            self.pending[device] = (value, int(t))
            weights.append(trust_weight(value, self.full))
        self.downweighted = [i for i, w in enumerate(weights) if w < 1.0]
        return weights

    def _weight(self, device: str) -> float:
        return trust_weight(self.of(device), self.full)

    def commit(self, step: np.ndarray) -> None:
        """The round's step was taken: keep its agreements and move the momentum by `step`
        (the mean of the weighed updates)."""
        if not self.enabled:
            return
        self.trust.update(self.pending)
        self.pending = {}
        self._forget()
        if self.momentum is not None and len(self.momentum) != len(step):
            self.momentum = None
        self.momentum = next_momentum(self.momentum, step, self.momentum_rate)

    def _forget(self) -> None:
        if len(self.trust) <= self.max_devices:
            return
        oldest = sorted(self.trust, key=lambda d: (self.trust[d][1], d))
        for device in oldest[: len(self.trust) - self.max_devices]:
            del self.trust[device]


def weighted(updates: Iterable[SparseUpdate], weights: Iterable[float]) -> list[SparseUpdate]:
    """The updates with their weight multiplied in; those of weight 0 are left out."""
    return [
        SparseUpdate(u.indices, u.values, u.samples, u.weight * float(w))
        for u, w in zip(updates, weights, strict=True)
        if w > 0
    ]
