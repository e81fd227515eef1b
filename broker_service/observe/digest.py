"""A session's metric points (docs/metrics.md) shaped for the report: the pure part, no drawing.

`digest` sorts the points into what each view needs; the small functions below decide how a view
shows its data: `is_flat` (a series that hardly moves is a number, not a magnified line),
`quantile_bands` (a per-device quantity over many devices as bands), `online_spans` (presence as
intervals), `outcome_grid` (participation as a device × round grid), `most` (which devices to
show when all of them would not fit).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from broker_service.observe.metrics import Point

MAX_ROWS = 40
"""Per-device rows a plot keeps readable; a larger fleet is shown in aggregate, with the devices
that most need attention."""
FLAT_REL = 0.01
"""A series whose range is within this fraction of its magnitude is flat: shown as a number."""
ACCEPTED, LATE, REJECTED = "accepted", "late", "rejected"


@dataclass
class Digest:
    """What a metrics file says about its session(s)."""

    tags: dict[str, list[str]] = field(default_factory=dict)
    session: dict = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0
    rounds: list[dict] = field(default_factory=list)
    metric: list[tuple[int, float, float | None]] = field(default_factory=list)
    updates: list[Point] = field(default_factory=list)
    participation: dict[tuple[str, int], tuple[str, str | None]] = field(default_factory=dict)
    presence: dict[str, list[tuple[int, int, int | None]]] = field(default_factory=dict)
    battery: dict[str, dict] = field(default_factory=dict)
    """Each device's latest `battery` point's fields (its projected battery life)."""

    def devices(self) -> list[str]:
        """Every device the session heard of (presence, participation, updates), sorted."""
        found = set(self.presence) | {d for d, _ in self.participation}
        found |= {p.tags.get("device", "") for p in self.updates}
        return sorted(d for d in found if d)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(round, value) of a field of the closed-round points, where it is present."""
        pairs = [(r["round"], r[key]) for r in self.rounds if r.get(key) is not None]
        if not pairs:
            return np.zeros(0), np.zeros(0)
        x, y = zip(*pairs, strict=True)
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def digest(points: Iterable[Point]) -> Digest:
    """Sort the points by measurement: closed rounds (the last point of each round), the metric
    with its CI against rounds done, device updates, participation and presence."""
    d = Digest()
    tags: dict[str, set[str]] = defaultdict(set)
    closed: dict[int, dict] = {}
    metric: dict[int, tuple[float, float | None]] = {}
    battery_seen: dict[str, Point] = {}
    stamps = []
    for p in points:
        stamps.append(p.ts_ns)
        for key in ("fleet", "use_case", "algorithm"):
            if p.tags.get(key):
                tags[key].add(p.tags[key])
        if p.measurement == "session":
            d.session.update(p.fields)
        elif p.measurement == "round":
            _round_point(p, closed, metric)
        elif p.measurement == "device_update":
            d.updates.append(p)
        elif p.measurement == "participation":
            key = (p.tags.get("device", ""), int(p.fields["round"]))
            d.participation[key] = (p.fields.get("outcome", ""), p.fields.get("reason"))
        elif p.measurement == "battery":
            latest = battery_seen.get(p.tags.get("device", ""))
            if latest is None or latest.ts_ns <= p.ts_ns:
                battery_seen[p.tags.get("device", "")] = p
        elif p.measurement == "presence":
            event = (p.ts_ns, int(p.fields.get("online", 0)), p.fields.get("free_heap"))
            d.presence.setdefault(p.tags.get("device", ""), []).append(event)
    d.tags = {k: sorted(v) for k, v in tags.items()}
    d.start_ns, d.end_ns = (min(stamps), max(stamps)) if stamps else (0, 0)
    d.rounds = [closed[r] for r in sorted(closed)]
    d.metric = [(r + 1, m, ci) for r, (m, ci) in sorted(metric.items())]
    for events in d.presence.values():
        events.sort()
    d.battery = {dev: p.fields for dev, p in battery_seen.items() if dev}
    return d


def _round_point(p: Point, closed: dict, metric: dict) -> None:
    """File a `round` point: a closed round (it has participants) and/or an evaluation."""
    f = p.fields
    if "round" not in f:
        return
    if "participants" in f:
        closed[int(f["round"])] = f
    if f.get("metric") is not None:
        metric[int(f["round"])] = (float(f["metric"]), f.get("metric_ci95"))


def is_flat(values: Sequence[float] | np.ndarray, rel: float = FLAT_REL) -> bool:
    """True when the values hardly move: their range is within `rel` of their magnitude (or
    there are fewer than two). Such a series is shown as a number: a plot would magnify noise."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) < 2:
        return True
    lo, hi = float(v.min()), float(v.max())
    return hi - lo <= rel * max(abs(lo), abs(hi))


def per_round(cumulative: np.ndarray) -> np.ndarray:
    """The increments of a cumulative series (the first value counts from zero)."""
    return np.diff(np.asarray(cumulative, dtype=float), prepend=0.0)


def quantile_bands(
    groups: Mapping[int, Sequence[float]], qs: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """(x, bands): for each key of `groups` in order, the quantiles `qs` of its values; bands
    has one row per quantile."""
    keys = sorted(k for k, v in groups.items() if len(v))
    if not keys:
        return np.zeros(0), np.zeros((len(qs), 0))
    bands = np.array([np.quantile(np.asarray(groups[k], dtype=float), qs) for k in keys]).T
    return np.asarray(keys, dtype=float), bands


def by_round(updates: Iterable[Point], key: str) -> dict[int, list[float]]:
    """{round: [value of `key` of each device update of that round]}."""
    out: dict[int, list[float]] = defaultdict(list)
    for p in updates:
        value = p.fields.get(key)
        if value is not None and "round" in p.fields:
            out[int(p.fields["round"])].append(float(value))
    return dict(out)


def online_spans(
    events: Sequence[tuple[int, int, int | None]], end_ns: int
) -> list[tuple[int, int, bool]]:
    """(start, end, online) intervals from a device's presence changes (sorted by time) up to
    `end_ns`; before its first change the device is unknown (no interval)."""
    spans = []
    for i, (ts, online, _) in enumerate(events):
        stop = events[i + 1][0] if i + 1 < len(events) else max(end_ns, ts)
        if stop > ts or i + 1 == len(events):
            spans.append((ts, stop, bool(online)))
    return spans


def offline_ns(spans: Iterable[tuple[int, int, bool]]) -> int:
    """How long the spans are offline, in nanoseconds."""
    return sum(stop - start for start, stop, online in spans if not online)


def online_count(
    presence: Mapping[str, Sequence[tuple[int, int, int | None]]],
) -> tuple[np.ndarray, np.ndarray]:
    """(time ns, devices online just after) at every presence change of the fleet."""
    changes = sorted((ts, d, online) for d, events in presence.items() for ts, online, _ in events)
    state: dict[str, int] = {}
    times, counts = [], []
    for ts, device, online in changes:
        state[device] = online
        times.append(ts)
        counts.append(sum(state.values()))
    return np.asarray(times, dtype=np.int64), np.asarray(counts, dtype=float)


def settled_online(
    presence: Mapping[str, Sequence[tuple[int, int, int | None]]],
) -> np.ndarray:
    """The online counts from the moment every device had said it was there (the births at the
    start are no change of the fleet's presence)."""
    times, counts = online_count(presence)
    if not len(times):
        return counts
    everyone = max(events[0][0] for events in presence.values() if events)
    return counts[times >= everyone]


def outcome_labels(participation: Mapping) -> list[str]:
    """The cell kinds of the participation grid: accepted, late, then 'rejected: <reason>' for
    each reason seen (sorted)."""
    reasons = sorted({r or "?" for o, r in participation.values() if o == REJECTED})
    return [ACCEPTED, LATE] + ["%s: %s" % (REJECTED, r) for r in reasons]


def outcome_grid(
    participation: Mapping[tuple[str, int], tuple[str, str | None]],
    devices: Sequence[str],
    rounds: Sequence[int],
    labels: Sequence[str],
) -> np.ndarray:
    """A devices × rounds grid of codes: 0 not invited, else 1 + the index of the cell's kind
    in `labels` (see outcome_labels)."""
    row = {d: i for i, d in enumerate(devices)}
    col = {r: j for j, r in enumerate(rounds)}
    code = {label: i + 1 for i, label in enumerate(labels)}
    grid = np.zeros((len(devices), len(rounds)), dtype=np.int16)
    for (device, r), (outcome, reason) in participation.items():
        if device in row and r in col:
            kind = outcome if outcome != REJECTED else "%s: %s" % (REJECTED, reason or "?")
            grid[row[device], col[r]] = code.get(kind, 0)
    return grid


def outcome_counts(
    participation: Mapping[tuple[str, int], tuple[str, str | None]], labels: Sequence[str]
) -> tuple[list[int], dict[str, list[int]]]:
    """(rounds, {kind: count per round}) of the participation grid, for a fleet too large for
    one row a device."""
    rounds = sorted({r for _, r in participation})
    col = {r: j for j, r in enumerate(rounds)}
    counts = {label: [0] * len(rounds) for label in labels}
    for (_, r), (outcome, reason) in participation.items():
        kind = outcome if outcome != REJECTED else "%s: %s" % (REJECTED, reason or "?")
        if kind in counts:
            counts[kind][col[r]] += 1
    return rounds, counts


def troubles(participation: Mapping[tuple[str, int], tuple[str, str | None]]) -> Counter[str]:
    """How often each device was late or rejected."""
    return Counter(d for (d, _), (outcome, _) in participation.items() if outcome != ACCEPTED)


def most(scores: Mapping[str, float], n: int = MAX_ROWS) -> list[str]:
    """The `n` devices of highest positive score (ties by id), sorted by id for display."""
    ranked = sorted((d for d, s in scores.items() if s > 0), key=lambda d: (-scores[d], d))
    return sorted(ranked[:n])


def lowest_heap(
    updates: Iterable[Point], presence: Mapping[str, Sequence[tuple[int, int, int | None]]]
) -> dict[str, float]:
    """{device: lowest free heap in bytes} from the update telemetry and the birth messages."""
    low: dict[str, float] = {}

    def seen(device: str, value) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            low[device] = min(low.get(device, math.inf), float(value))

    for p in updates:
        seen(p.tags.get("device", ""), p.fields.get("heap_free"))
    for device, events in presence.items():
        for _, _, heap in events:
            seen(device, heap)
    return low
