"""The bookkeeping of one round, free of I/O: who was asked, who answered, who was late or
rejected and why, and whether a quorum was reached.

Idempotent by (device, round, model version): a redelivered or duplicated update is counted once.
An accepted update weighs at most the samples its round asked for (`max_samples`), whatever it
claims; it is refused with more entries than the round's Top-P% keeps (`max_entries`) and over
the norm bound (`max_norm`, set by admission.py).
The ledger alone decides what counts: `offer` accepts, `reject` records a refusal, `withdraw`
undoes an acceptance the service could not make durable, `close` ends the round.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from broker_service.core import fastcodec
from broker_service.core.aggregate import SparseUpdate, clamp_samples, update_norm, within_bound
from device_agent import codec, limits, reasons

NOT_AN_ANSWER = frozenset({reasons.LATE, reasons.WRONG_ROUND, reasons.STORAGE_ERROR})
"""Rejections that do not settle an invited device's turn: an update for another round (the
device may still answer this one) or one the service failed to store (not the device's fault)."""


class Rejected(Exception):
    """A message the service refuses (an update the round refuses, a status or telemetry
    document it cannot use); `reason` is a short machine-readable cause, `detail` what was
    wrong (without the reason, so a log line names the reason once)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason
        self.detail = detail


@dataclass
class Accepted:
    """An accepted update: the decoded sparse delta (weighted by at most the round's sample
    budget), its size on the wire, the device, the sample count it claimed and the round it
    answers (in an asynchronous session: the model version it was computed on)."""

    device: str
    update: SparseUpdate
    payload_bytes: int
    nnz: int
    claimed: int = 0
    round: int = -1


@dataclass
class RoundLedger:
    """One round t at model version v, run with one or more cohorts (attempts)."""

    round: int
    version: int
    n: int
    max_payload: int = limits.MAX_PAYLOAD
    max_norm: float = 0.0
    max_samples: int = limits.MAX_SAMPLES
    max_entries: int = 0
    invited: set[str] = field(default_factory=set)
    accepted: dict[str, Accepted] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    last_cohort: int = 0
    closed: bool = False

    def invite(self, cohort: list[str]) -> None:
        """Start an attempt with these devices."""
        self.invited.update(cohort)
        self.attempts += 1
        self.last_cohort = len(cohort)

    def waiting_for(self) -> set[str]:
        """Invited devices that have not answered yet (a refused answer counts as one)."""
        return self.invited - set(self.accepted) - set(self.refused)

    def has_waiting(self) -> bool:
        """True when `waiting_for()` is not empty, without building the set while fewer
        devices answered than were invited (both answers are subsets of the invited)."""
        if len(self.accepted) + len(self.refused) < len(self.invited):
            return True
        return bool(self.waiting_for())

    def restore(self, device: str, payload: bytes) -> Accepted | None:
        """Re-offer an update journaled before a restart: its device was invited then."""
        self.invited.add(device)
        return self.offer(device, payload)

    def offer(
        self,
        device: str,
        payload: bytes,
        decoded: fastcodec.Decoded | codec.CodecError | None = None,
    ) -> Accepted | None:
        """Validate an update; returns it when newly accepted, None for a duplicate.
        `decoded` is what `fastcodec.decode_many` gave for `payload` (decoded here when None).

        Raises Rejected with the reason otherwise. Never changes state on a rejection.
        """
        if self.closed:
            raise Rejected(reasons.LATE, "round %d is closed" % self.round)
        try:
            if decoded is None:
                decoded = fastcodec.decode(payload, self.max_payload)
            if isinstance(decoded, codec.CodecError):
                raise decoded
            h, idx, values = decoded
        except codec.CodecError as exc:
            raise Rejected(exc.reason, str(exc)) from None
        self._check(device, h, values)
        if self.max_entries and h.k > self.max_entries:
            raise Rejected(
                reasons.OVER_BUDGET, "%d entries, the round keeps %d" % (h.k, self.max_entries)
            )
        if device in self.accepted:
            self.duplicates += 1
            return None
        norm = update_norm(values)
        if not within_bound(norm, self.max_norm):
            raise Rejected(reasons.NORM_BOUND, "‖Δ‖=%.3g > %.3g" % (norm, self.max_norm))
        update = clamp_samples(SparseUpdate(idx, values, h.samples), self.max_samples)
        entry = Accepted(device, update, len(payload), h.k, h.samples, self.round)
        self.accepted[device] = entry
        return entry

    def _check(self, device: str, h: codec.Header, values: np.ndarray) -> None:
        if h.kind != codec.KIND_DELTA:
            raise Rejected(reasons.BAD_KIND, "expected a delta")
        if h.round < self.round:
            raise Rejected(reasons.LATE, "round %d already closed" % h.round)
        if h.round != self.round:
            raise Rejected(
                reasons.WRONG_ROUND, "round %d, open round is %d" % (h.round, self.round)
            )
        if h.model_version != self.version:
            raise Rejected(
                reasons.STALE_VERSION, "version %d, current %d" % (h.model_version, self.version)
            )
        if h.n != self.n:
            raise Rejected(reasons.SHAPE_MISMATCH, "n=%d, model has %d" % (h.n, self.n))
        if device not in self.invited:
            raise Rejected(reasons.NOT_IN_COHORT, device)

    def reject(self, device: str, reason: str) -> None:
        """Record that an update from `device` was refused for `reason` (by `offer` or before it,
        e.g. a bad signature): the rejection is counted, and an invited device whose update is
        refused for what it is (see NOT_AN_ANSWER) has had its turn and is not waited for."""
        self.rejected[reason] += 1
        if device in self.invited and reason not in NOT_AN_ANSWER:
            self.refused.setdefault(device, reason)

    def withdraw(self, device: str, reason: str) -> Accepted:
        """Undo the acceptance of `device`'s update (e.g. it could not be journaled) and count
        the rejection; the device is waited for again, so its resent update can still count.
        Raises KeyError when the device has no accepted update."""
        entry = self.accepted.pop(device)
        self.rejected[reason] += 1
        return entry

    def close(self) -> list[str]:
        """Close the round (later updates are late); returns the invited devices that never
        answered, sorted."""
        self.closed = True
        return sorted(self.waiting_for())

    def quorum_met(self, quorum: float, min_updates: int) -> bool:
        """True when at least max(min_updates, ceil(quorum × last cohort size)) answered."""
        need = max(min_updates, math.ceil(quorum * max(1, self.last_cohort)))
        return len(self.accepted) >= need

    def answered(self, device: str, round_no: object) -> Accepted | None:
        """`device`'s accepted update when `round_no` is this round's, else None."""
        return self.accepted.get(device) if round_no == self.round else None

    def entries(self) -> list[Accepted]:
        """The accepted updates as `Accepted` records, in acceptance order."""
        return list(self.accepted.values())

    def devices(self) -> list[str]:
        """The devices of the accepted updates, sorted: the order of `updates()`."""
        return sorted(self.accepted)

    def updates(self) -> list[SparseUpdate]:
        """The accepted updates in a stable order (by device id)."""
        return [self.accepted[d].update for d in sorted(self.accepted)]

    def bytes_up(self) -> int:
        """The size on the wire of the accepted updates."""
        return sum(a.payload_bytes for a in self.accepted.values())
