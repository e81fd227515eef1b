"""What every renderer shares: the block record, figures written the same way on every page,
and the line that says how a results file was made (its provenance)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
NONE = "–"
"""A cell with nothing to show (not measured, not recorded, not applicable)."""
USE_CASES = ("sine", "omniglot", "kws", "occupancy")
"""The bench's use cases, in the order the pages list them."""


@dataclass(frozen=True)
class Block:
    """A generated block: `render` takes the loaded JSON of `files` (in that order) and returns
    Markdown; `title` is its heading in the appendix."""

    name: str
    title: str
    files: tuple[str, ...]
    render: Callable[..., str]


def bench_files() -> tuple[str, ...]:
    """The bench's documents, one per use case (benchmarks/seed_sweep.py writes them)."""
    return tuple("bench-%s.json" % u for u in USE_CASES)


def tuned_files() -> tuple[str, ...]:
    """The tuning's documents, one per use case (benchmarks/tune.py writes them)."""
    return tuple("tuned-%s.json" % u for u in USE_CASES)


def fixed(value: float | None, digits: int = 4) -> str:
    """A value with `digits` decimals, or NONE when there is none."""
    return NONE if value is None else "%.*f" % (digits, value)


def count(value: int | None) -> str:
    """An integer count, or NONE when it was not recorded."""
    return NONE if value is None else "%d" % value


def figure(x: float) -> str:
    """A positive figure with three significant digits at most, never in e-notation."""
    if x >= 100:
        return f"{x:,.0f}"
    return "%.3g" % x if x >= 0.001 else "%.1g" % x


def short(value: float) -> str:
    """Four decimals, or three significant digits for a value that blew up."""
    return "%.4f" % value if abs(value) < 1000 else "%.3g" % value


def times(ratio: float | None) -> str:
    """A ratio written as a multiplier (NONE when undefined)."""
    return NONE if ratio is None else "%.2f×" % ratio


def listed(values) -> str:
    """Seeds, folds or names as a comma-separated list."""
    return ", ".join(str(v) for v in values)


def provenance_text(doc: dict, made_by: str | None) -> str:
    """How a results file was made: its recorded command, commit, date, cores and load, or,
    without a record, the commit that committed it; and when its energy figures were re-priced
    (benchmarks/reprice.py), by what."""
    record = doc.get("provenance") or {}
    text = _made_text(record, made_by)
    repriced = record.get("repriced")
    if repriced:
        text += "; energy re-priced by `%s`, %s, %s" % (
            repriced.get("command", "?"),
            _commit_text(repriced.get("commit")),
            repriced.get("date", "date not recorded"),
        )
    return text


def _commit_text(commit: str | None) -> str:
    commit = commit or "unknown"
    dirty = commit.endswith("-dirty")
    return "commit %s%s" % (commit.removesuffix("-dirty")[:7], " with uncommitted changes" * dirty)


def _made_text(record: dict, made_by: str | None) -> str:
    if "command" not in record:
        return "provenance not recorded (made by commit %s)" % (made_by or "unknown")
    parts = [
        "made by `%s`" % record.get("command", "?"),
        _commit_text(record.get("commit")),
        record.get("date", "date not recorded"),
        "%s cores" % record.get("cores", "?"),
    ]
    start, end = record.get("load_at_start") or [], record.get("load_at_end") or []
    if start or end:
        parts.append(
            "load %s → %s (one-minute average, start → end)"
            % (fixed(start[0], 2) if start else "?", fixed(end[0], 2) if end else "?")
        )
    return ", ".join(parts)
