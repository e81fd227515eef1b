"""What every view of the report is made of: tiles, panels and views, and what they share.

A view (one section of the page, a row of the Grafana dashboard) shows numbers first (tiles) and
then plots (panels drawn later, when the page is written). Also here is what several views
need: a session tag as text, the note of a series too flat to plot, the metric's name and
a cumulative series that counts the rounds before a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from broker_service.observe.digest import Digest


@dataclass
class Tile:
    """A figure shown as a number: a headline, or a series too flat to plot."""

    value: str
    label: str
    note: str = ""


@dataclass
class Panel:
    """A plot: `draw(ax)` with a title; wide panels take the page's full width."""

    title: str
    draw: Callable
    height: float = 3.0
    wide: bool = False


@dataclass
class View:
    """One section of the report: numbers first, then plots."""

    key: str
    title: str
    tiles: list[Tile] = field(default_factory=list)
    panels: list[Panel] = field(default_factory=list)
    note: str = ""


VIEWS = [
    ("convergence", "Convergence"),
    ("communication", "Communication"),
    ("energy", "Energy (estimates)"),
    ("participation", "Participation"),
    ("presence", "Presence and memory"),
]
"""The views in page order: (section id, title); the Grafana dashboard has a row for each."""
TITLES = dict(VIEWS)


def tag_text(d: Digest, key: str) -> str:
    """A session tag's values joined ("?" when the points do not carry it)."""
    return ", ".join(d.tags.get(key, [])) or "?"


def flat_note(values: Sequence[float], fmt: Callable[[float], str], what: str = "rounds") -> str:
    """Where a flat series lies: 'flat: 12.53 – 12.60 over 40 rounds'."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return "one value"
    return "flat: %s – %s over %d %s" % (fmt(v.min()), fmt(v.max()), len(v), what)


def metric_name(d: Digest) -> str:
    """The metric's name as the session point gave it ("metric" for an older file)."""
    return d.session.get("metric_name") or "metric"


def session_total(d: Digest, key: str, each: np.ndarray) -> np.ndarray:
    """The session total of `key` after each round (`<key>_total`: it counts the rounds before
    a restart too), else the running sum of the rounds in the file."""
    _, total = d.series(key + "_total")
    return total if len(total) == len(each) else np.cumsum(each)
