"""The report's participation view: who was invited and how each invitation ended (accepted,
late, rejected with the reason) as a device × round grid, and rejected updates by reason.

A fleet too large for one row a device is shown in aggregate (invitations per round by outcome)
with the grid of the devices most often late or rejected.
"""

from __future__ import annotations

import numpy as np

from broker_service.observe import charts
from broker_service.observe.digest import (
    MAX_ROWS,
    Digest,
    most,
    outcome_counts,
    outcome_grid,
    outcome_labels,
    troubles,
)
from broker_service.observe.report_base import TITLES, Panel, Tile, View


def participation_view(d: Digest) -> View:
    """Who was invited and how each invitation ended; rejected updates by reason."""
    view = View("participation", TITLES["participation"])
    x, participants = d.series("participants")
    _, late = d.series("late")
    rejected = _rejected_by_reason(d)
    if len(x):
        view.tiles += [
            Tile("%.3g" % float(np.mean(participants)), "updates per round (mean)"),
            Tile("%d" % int(late.sum()), "late (invited, no answer)"),
            Tile(
                "%d" % sum(int(v.sum()) for v in rejected.values()),
                "updates rejected",
                ", ".join("%s %d" % (k, int(v.sum())) for k, v in sorted(rejected.items())),
            ),
        ]
    if d.participation:
        view.panels += _participation_panels(d)
    if rejected:
        colours = dict(zip(sorted(rejected), charts.REJECTED_COLOURS * 4, strict=False))
        counts = {k: rejected[k] for k in sorted(rejected)}
        view.panels.append(
            Panel(
                "rejected updates by reason (all senders)",
                lambda ax: charts.stacked_counts(ax, list(x), counts, colours),
            )
        )
    return view


def _rejected_by_reason(d: Digest) -> dict[str, np.ndarray]:
    """Rejected updates per round for each reason that occurred (from `rejected_<reason>`)."""
    keys = sorted({k for r in d.rounds for k in r if k.startswith("rejected_")})
    out = {}
    for key in keys:
        values = np.array([r.get(key, 0) for r in d.rounds], dtype=float)
        if values.any():
            out[key[len("rejected_") :]] = values
    return out


def _participation_panels(d: Digest) -> list[Panel]:
    """The device × round grid, or for a large fleet the outcomes per round and the grid of
    the devices most often late or rejected."""
    labels = outcome_labels(d.participation)
    invited = sorted({dev for dev, _ in d.participation})
    rounds = list(range(min(r for _, r in d.participation), max(r for _, r in d.participation) + 1))
    if len(invited) <= MAX_ROWS:
        return [
            _grid_panel(d, invited, rounds, labels, "device × round (%d devices)" % len(invited))
        ]
    counts_x, counts = outcome_counts(d.participation, labels)
    colours = charts.outcome_colours(labels)
    panels = [
        Panel(
            "invitations per round by outcome (%d devices)" % len(invited),
            lambda ax: charts.stacked_counts(ax, counts_x, counts, colours),
            wide=True,
        )
    ]
    worst = most(troubles(d.participation))
    if worst:
        title = "the %d devices most often late or rejected" % len(worst)
        panels.append(_grid_panel(d, worst, rounds, labels, title))
    return panels


def _grid_panel(
    d: Digest, devices: list[str], rounds: list[int], labels: list[str], title: str
) -> Panel:
    """The outcome of each invitation of `devices` over `rounds`, one row a device."""
    grid = outcome_grid(d.participation, devices, rounds, labels)
    return Panel(
        title,
        lambda ax: charts.heat_grid(ax, grid, devices, rounds, labels),
        height=1.3 + 0.16 * len(devices),
        wide=True,
    )
