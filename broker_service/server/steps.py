"""The bookkeeping of asynchronous sessions, free of I/O (docs/protocol.md, "Asynchronous
sessions"): the buffer of one aggregation step, the receipts, and when a step is due.

At step t (model version t) an update computed on version v has staleness s = t − v. It is
refused with s < 0 (`wrong_round`: a version not published yet) and with s > `max_staleness`
(`too_stale`, for good); a (device, version) pair accepted before is a repeat, counted once;
otherwise it is checked as a round's update (kind, length, entry budget, norm bound, sample
clamp) and accepted into the buffer with weight w(s) = (1 + s)^−power, which the aggregation
multiplies with its sample count and its device's trust (core.aggregate, core.bounds).

`StepBuffer` answers to the same verbs as a round's `RoundLedger` (`offer`, `restore`,
`reject`, `withdraw`), so `admission.Admission` admits, journals and withdraws its updates
unchanged. `AcceptedPairs` remembers the pairs accepted for the last max_staleness + 1 versions
(older ones are refused as too stale anyway) and `Receipts` each device's newest journalled or
finally refused version: both are kept in the checkpoint.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from broker_service.core import fastcodec
from broker_service.core.aggregate import SparseUpdate, clamp_samples, update_norm, within_bound
from broker_service.server.rounds import Accepted, Rejected
from device_agent import codec, limits, reasons

Pair = tuple[str, int]
"""(device, model version) of an accepted update."""


def staleness_weight(staleness: int, power: float) -> float:
    """w(s) = (1 + s)^−power: the factor an update `staleness` versions old is weighed by
    (FedBuff's polynomial discount; 1 for a fresh update or power 0)."""
    return float((1.0 + max(0, int(staleness))) ** -float(power))


def step_due(count: int, buffer: int, elapsed: float, timeout: float, min_updates: int) -> bool:
    """True when a step with `count` accepted updates, open for `elapsed` seconds, is taken:
    the buffer is full, or `timeout` passed with at least `min_updates` (and one) updates."""
    if count >= buffer:
        return True
    return elapsed >= timeout and count >= max(1, min_updates)


class Refused(Rejected):
    """An update refused for good, of a known version: its device's receipt says so (the
    device drops it rather than sending it again)."""

    def __init__(self, reason: str, detail: str, version: int) -> None:
        super().__init__(reason, detail)
        self.version = version


@dataclass
class AcceptedPairs:
    """The (device, version) pairs accepted for recent versions: a repeat is counted once."""

    pairs: set[Pair] = field(default_factory=set)

    def __contains__(self, pair: Pair) -> bool:
        return pair in self.pairs

    def add(self, pair: Pair) -> None:
        """Remember an accepted pair."""
        self.pairs.add(pair)

    def discard(self, pair: Pair) -> None:
        """Forget a pair whose acceptance was withdrawn."""
        self.pairs.discard(pair)

    def prune(self, step: int, max_staleness: int) -> None:
        """Forget the pairs of versions older than step − max_staleness: their updates are
        refused as too stale before a repeat could be recognised."""
        oldest = step - max_staleness
        self.pairs = {p for p in self.pairs if p[1] >= oldest}

    def to_list(self) -> list[list]:
        """The pairs as sorted [device, version] lists (what the checkpoint keeps)."""
        return [[d, v] for d, v in sorted(self.pairs)]

    @classmethod
    def from_list(cls, saved: object) -> AcceptedPairs:
        """Pairs from `to_list()`'s form; malformed entries are skipped."""
        pairs = set()
        for entry in saved if isinstance(saved, list) else []:
            if _is_pair(entry):
                pairs.add((entry[0], entry[1]))
        return cls(pairs)


def _is_pair(entry: object) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], int)
        and not isinstance(entry[1], bool)
        and entry[1] >= 0
    )


@dataclass
class Receipts:
    """Each device's receipt: the newest version whose update the service journalled, or
    refused for good (then with the reason). A receipt never moves back."""

    latest: dict[str, tuple[int, str | None]] = field(default_factory=dict)

    def record(self, device: str, version: int, reason: str | None = None) -> bool:
        """Receipt `device`'s update of `version` (refused for good when `reason` is set);
        True when its receipt moved forward."""
        held = self.latest.get(device)
        if held is not None and held[0] >= version:
            return False
        self.latest[device] = (version, reason)
        return True

    def fields(self, device: str) -> dict:
        """The work order's receipt fields for `device`: `receipt` and `receipt_reason`, each
        only when there is one."""
        held = self.latest.get(device)
        if held is None:
            return {}
        version, reason = held
        return {"receipt": version, **({"receipt_reason": reason} if reason else {})}

    def to_dict(self) -> dict[str, list]:
        """{device: [version, reason or null]} (what the checkpoint keeps)."""
        return {d: [v, r] for d, (v, r) in sorted(self.latest.items())}

    @classmethod
    def from_dict(cls, saved: object) -> Receipts:
        """Receipts from `to_dict()`'s form; malformed entries are skipped."""
        latest: dict[str, tuple[int, str | None]] = {}
        for device, entry in saved.items() if isinstance(saved, Mapping) else []:
            if _is_pair([device, entry[0]] if isinstance(entry, list) and entry else None):
                reason = entry[1] if len(entry) > 1 and isinstance(entry[1], str) else None
                latest[device] = (entry[0], reason)
        return cls(latest)


@dataclass
class StepBuffer:
    """The updates of aggregation step t (model version t) until the step is taken."""

    step: int
    n: int
    seen: AcceptedPairs
    max_staleness: int
    power: float
    max_payload: int = limits.MAX_PAYLOAD
    max_norm: float = 0.0
    max_samples: int = limits.MAX_SAMPLES
    max_entries: int = 0
    by_pair: dict[Pair, Accepted] = field(default_factory=dict)
    order: list[Pair] = field(default_factory=list)
    accepted: dict[str, Accepted] = field(default_factory=dict)
    """Each device's newest accepted update of the step (what the round's reports read)."""
    invited: frozenset[str] = frozenset()
    refused: dict[str, str] = field(default_factory=dict)
    """No device is invited, so none is late nor has its turn refused (the round's reports)."""
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    attempts: int = 1
    closed: bool = False

    @property
    def round(self) -> int:
        """The step (a round's ledger calls it its round)."""
        return self.step

    def offer(
        self,
        device: str,
        payload: bytes,
        decoded: fastcodec.Decoded | codec.CodecError | None = None,
    ) -> Accepted | None:
        """Validate an update; returns it when newly accepted, None for a repeat of an
        accepted (device, version). Raises Rejected (Refused when for good) otherwise, and then
        changes nothing."""
        if self.closed:
            raise Rejected(reasons.LATE, "step %d is taken" % self.step)
        h, idx, values = self._decode(payload, decoded)
        version = h.model_version
        self._check(h)
        if (device, version) in self.seen:
            self.duplicates += 1
            return None
        norm = update_norm(values)
        if not within_bound(norm, self.max_norm):
            raise Refused(reasons.NORM_BOUND, "‖Δ‖=%.3g > %.3g" % (norm, self.max_norm), version)
        weight = staleness_weight(self.step - version, self.power)
        update = clamp_samples(SparseUpdate(idx, values, h.samples, weight), self.max_samples)
        entry = Accepted(device, update, len(payload), h.k, h.samples, version)
        self.by_pair[(device, version)] = entry
        self.accepted[device] = entry
        self.order.append((device, version))
        self.seen.add((device, version))
        return entry

    def _decode(self, payload: bytes, decoded) -> fastcodec.Decoded:
        """The decoded update (Rejected with the codec's reason when it is not one)."""
        try:
            if decoded is None:
                decoded = fastcodec.decode(payload, self.max_payload)
            if isinstance(decoded, codec.CodecError):
                raise decoded
            return decoded
        except codec.CodecError as exc:
            raise Rejected(exc.reason, str(exc)) from None

    def _check(self, h: codec.Header) -> None:
        """The checks of a decoded header: a version not published yet is refused (the device
        may send it again), anything else for good."""
        version, staleness = h.model_version, self.step - h.model_version
        if staleness < 0:
            raise Rejected(
                reasons.WRONG_ROUND, "version %d, the service is at %d" % (version, self.step)
            )
        if h.kind != codec.KIND_DELTA:
            raise Refused(reasons.BAD_KIND, "expected a delta", version)
        if h.round != version:
            raise Refused(
                reasons.WRONG_ROUND, "round %d of version %d" % (h.round, version), version
            )
        if staleness > self.max_staleness:
            raise Refused(
                reasons.TOO_STALE,
                "version %d is %d steps old, at most %d" % (version, staleness, self.max_staleness),
                version,
            )
        if h.n != self.n:
            raise Refused(reasons.SHAPE_MISMATCH, "n=%d, model has %d" % (h.n, self.n), version)
        if self.max_entries and h.k > self.max_entries:
            raise Refused(
                reasons.OVER_BUDGET,
                "%d entries, a step keeps %d" % (h.k, self.max_entries),
                version,
            )

    def restore(self, device: str, payload: bytes) -> Accepted | None:
        """Re-offer an update journaled before a restart."""
        return self.offer(device, payload)

    def reject(self, device: str, reason: str) -> None:
        """Count a refused update (by `offer` or before it, e.g. a bad signature)."""
        self.rejected[reason] += 1

    def withdraw(self, device: str, reason: str) -> Accepted:
        """Undo the newest acceptance of `device`'s updates (it could not be journaled) and
        count the rejection; a resent update can still count. KeyError when there is none."""
        pair = next(p for p in reversed(self.order) if p[0] == device)  # StopIteration: none
        self.order.remove(pair)
        self.seen.discard(pair)
        self.rejected[reason] += 1
        entry = self.by_pair.pop(pair)
        newest = [self.by_pair[p] for p in self.order if p[0] == device]
        if newest:
            self.accepted[device] = newest[-1]
        else:
            del self.accepted[device]
        return entry

    def close(self) -> list[str]:
        """Take the step (later updates belong to the next one); no device is late."""
        self.closed = True
        return []

    def answered(self, device: str, version: object) -> Accepted | None:
        """`device`'s accepted update of `version` in this step, else None."""
        return self.by_pair.get((device, version)) if isinstance(version, int) else None

    def pairs(self) -> list[Pair]:
        """The accepted (device, version) pairs in a stable order."""
        return sorted(self.by_pair)

    def count(self) -> int:
        """How many updates the step accepted."""
        return len(self.by_pair)

    def devices(self) -> list[str]:
        """The senders of `updates()`, in its order."""
        return [device for device, _ in self.pairs()]

    def updates(self) -> list[SparseUpdate]:
        """The accepted updates in a stable order (by device, then version)."""
        return [self.by_pair[p].update for p in self.pairs()]

    def entries(self) -> list[Accepted]:
        """The accepted updates as `Accepted` records, in acceptance order."""
        return [self.by_pair[p] for p in self.order]

    def bytes_up(self) -> int:
        """The size on the wire of the accepted updates."""
        return sum(a.payload_bytes for a in self.by_pair.values())

    def mean_staleness(self) -> float:
        """The mean staleness of the accepted updates (NaN without any)."""
        if not self.by_pair:
            return math.nan
        return float(np.mean([self.step - v for _, v in self.by_pair]))


def known_devices(*groups: Iterable[str]) -> list[str]:
    """The devices of all `groups`, sorted and once each."""
    return sorted(set().union(*groups))
