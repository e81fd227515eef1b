"""Hostile devices, for the hostile-device benchmark and tests (issue 12, brief section 2b).

A hostile device is enrolled and uses only its own topics, but sends whatever it likes:
- learning attacks, on the update it was asked for (`Attacker`, a tamper function for
  `simulation.run`; `HostileRunner`, a round runner for a real agent over MQTT);
- message attacks, malformed documents on its status, telemetry and update topics (`BOMBS`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np

from broker_service.core import fastcodec
from broker_service.core.aggregate import SparseUpdate, update_norm
from broker_service.core.bounds import InfluenceBounds
from broker_service.sim.fleet import NumpyRunner
from device_agent import codec

HUGE = 3e38
"""Finite in float32; two of them overflow."""

LEARNING_ATTACKS = {
    "sign_flip": "the update reversed and 10× longer",
    "scaled": "the update 50× longer",
    "noise": "Gaussian noise, on average about 10× longer than the update",
    "max_norm": "the update reversed, stretched to 90 % of the refusal bound",
    "drift": "one fixed direction shared by all hostile devices, on as many coordinates as the "
    "round allows (its largest), at 90 % of the refusal bound",
    "inflate": "the update reversed, claiming 65,535 samples",
    "huge": "every value 3e38",
    "nan": "NaN and infinite values",
    "stale": "the device's first update replayed in every later round",
    "alternate": "the update reversed ×10 in every other round it is invited to, honest between",
    "reenroll": "the update reversed ×10, sent under a fresh device id every round",
    "sleeper": "honest for the first half of the session, then the update reversed ×10",
}
"""What each learning attack sends instead of the device's update."""


class WatchedBounds(InfluenceBounds):
    """The service's bounds, remembering the model the last update was screened against: an
    attacker knows θ_g (it is published to every device) and here also the refusal bound."""

    theta: np.ndarray | None = None
    start: float = 0.0  # ‖θ_g‖ at the first screening, and the largest since
    peak: float = 0.0

    def screen(
        self, update: SparseUpdate, theta: np.ndarray, budget: int, entries: int = 0
    ) -> SparseUpdate | None:
        self.theta = theta
        length = update_norm(theta)
        self.start = self.start or length
        self.peak = max(self.peak, length)
        return super().screen(update, theta, budget, entries)

    def refusal_bound(self) -> float:
        """The bound the next update will be screened against (∞ before any was)."""
        if self.theta is None:
            return math.inf
        bound = self.norm_bound(self.theta)
        return bound if bound > 0 else math.inf


class Attacker:
    """A tamper function for `simulation.run`: the devices in `hostile` send `attack` (one of
    LEARNING_ATTACKS) instead of their update. `bounds` are the run's bounds (max_norm and
    drift aim just under its refusal bound); `rounds` is the session's length (a sleeper turns
    halfway)."""

    def __init__(
        self,
        attack: str,
        hostile: Iterable[str],
        seed: int,
        bounds: WatchedBounds,
        rounds: int = 0,
    ):
        if attack not in LEARNING_ATTACKS:
            raise ValueError("unknown attack %r: %s" % (attack, ", ".join(LEARNING_ATTACKS)))
        self.attack = attack
        self.hostile = set(hostile)
        self.seed = seed
        self.bounds = bounds
        self.rounds = int(rounds)
        self.first: dict[str, SparseUpdate] = {}
        self.turns: dict[str, int] = {}
        self.direction: np.ndarray | None = None

    def identity(self, device: str, t: int) -> str:
        """The id the service sees `device` send under in round t (a fresh one each round for
        a re-enrolling hostile device)."""
        if self.attack == "reenroll" and device in self.hostile:
            return "%s~%d" % (device, t)
        return device

    def __call__(self, device: str, update: SparseUpdate, t: int) -> SparseUpdate:
        if device not in self.hostile:
            return update
        values = np.asarray(update.values, dtype=np.float32)
        kind = self.attack
        if kind in ("sign_flip", "reenroll"):
            return _with(update, -10.0 * values)
        if kind == "sleeper":
            return _with(update, -10.0 * values) if 2 * t >= self.rounds else update
        if kind == "alternate":
            self.turns[device] = self.turns.get(device, 0) + 1
            return _with(update, -10.0 * values) if self.turns[device] % 2 == 0 else update
        if kind == "scaled":
            return _with(update, 50.0 * values)
        if kind == "noise":
            rng = np.random.default_rng([self.seed, t, sum(device.encode())])
            noise = rng.standard_normal(len(values))
            return _with(update, noise * 10.0 * update_norm(values) / math.sqrt(len(values)))
        if kind == "max_norm":
            return _with(update, _stretched(-values, 0.9 * self.bounds.refusal_bound()))
        if kind == "drift":
            return self._drift(update)
        if kind == "inflate":
            return SparseUpdate(update.indices, -values, codec.MAX_SAMPLES)
        if kind == "huge":
            return _with(update, np.full(len(values), HUGE))
        if kind == "nan":
            return _with(update, np.where(np.arange(len(values)) % 2, math.nan, math.inf))
        first = self.first.setdefault(device, update)  # stale
        return SparseUpdate(first.indices, first.values, update.samples)

    def _drift(self, update: SparseUpdate) -> SparseUpdate:
        """An update along one direction drawn once for the whole attack, on the coordinates
        where it is largest, as many as an honest update has (the service refuses more)."""
        theta = self.bounds.theta
        n = len(theta) if theta is not None else int(np.max(update.indices)) + 1
        if self.direction is None or len(self.direction) != n:
            self.direction = np.random.default_rng([self.seed, 99]).standard_normal(n)
        bound = self.bounds.refusal_bound()
        if not math.isfinite(bound):
            return update
        keep = np.sort(np.argsort(-np.abs(self.direction), kind="stable")[: len(update.values)])
        values = _stretched(self.direction[keep], 0.9 * bound).astype(np.float32)
        return SparseUpdate(keep.astype(np.uint32), values, update.samples)


def _with(update: SparseUpdate, values: np.ndarray) -> SparseUpdate:
    return SparseUpdate(update.indices, np.asarray(values, dtype=np.float32), update.samples)


def _stretched(values: np.ndarray, length: float) -> np.ndarray:
    norm = update_norm(values)
    if not math.isfinite(length) or norm == 0:
        return values
    return values * (length / norm)


def hostile_devices(devices: list[str], fraction: float, seed: int) -> list[str]:
    """A seeded `fraction` of the devices (at least one), sorted."""
    count = max(1, int(round(fraction * len(devices))))
    rng = np.random.default_rng([seed, 77])
    return sorted(str(d) for d in rng.choice(sorted(devices), count, replace=False))


def forged_delta(command: dict, n: int, indices, values, samples: int) -> bytes:
    """A well-formed float32 DELTA for the command's round, with any values and claim."""
    return bytes(
        codec.encode(
            codec.KIND_DELTA,
            n,
            [int(i) for i in indices],
            [float(v) for v in values],
            int(command["version"]),
            int(command["round"]),
            int(samples),
            codec.VALUE_F32,
        )
    )


class HostileRunner(NumpyRunner):
    """A re-flashed agent's round over MQTT: it computes the honest update, then sends the
    attack of the round instead (`schedule`, cycled by round number)."""

    SCHEDULE = ("huge", "inflate", "nan", "sign_flip", "stale", "scaled", "dense")

    def __init__(self, *args, schedule: tuple[str, ...] = SCHEDULE, **kwargs):
        super().__init__(*args, **kwargs)
        self.schedule = schedule
        self.first: tuple | None = None

    def __call__(self, agent, command):
        result = super().__call__(agent, command)
        h, idx, values = fastcodec.decode(result.payload)
        self.first = self.first or (idx, values)
        kind = self.schedule[int(command["round"]) % len(self.schedule)]
        samples = h.samples
        if kind == "huge":
            values = np.full(len(idx), HUGE)
        elif kind == "inflate":
            values, samples = -values, codec.MAX_SAMPLES
        elif kind == "nan":
            values = np.full(len(idx), math.nan)
        elif kind == "sign_flip":
            values = -10.0 * values
        elif kind == "stale":
            idx, values = self.first
        elif kind == "dense":  # its update plus a little on every other coordinate
            spread = np.full(h.n, 1e-4)
            spread[idx] = values
            idx, values = np.arange(h.n), spread
        else:
            values = 10.0 * values
        payload = forged_delta(command, h.n, idx, values, samples)
        return dataclasses.replace(result, payload=payload)


BOMBS = {
    "status_deep": ("status", b'{"state": "online", "caps": ' + b"[" * 2000),
    "status_huge": ("status", b"[" * 100_000),
    "status_number": ("status", b'{"state": "online", "free_heap": ' + b"9" * 400 + b"}"),
    "telemetry_deep": ("telemetry", b"[" * 8000),
    "telemetry_number": ("telemetry", b'{"round": 0, "loss_after": ' + b"9" * 400 + b"}"),
    "telemetry_nan": ("telemetry", b'{"round": 0, "energy_mj": 1e999, "loss_after": NaN}'),
    "telemetry_negative": ("telemetry", b'{"round": 0, "samples": -3}'),
    "update_junk": ("update", b"TM\x01\x02" + bytes(60)),
}
"""Malformed messages a hostile device publishes on its own topics: {name: (leaf, payload)}."""
