"""`tinymetafed report`: one self-contained HTML page of a session from its metrics file, made to
be looked at rather than read, with the same views as the Grafana dashboard.

A header says which session it is (use case, algorithm, fleet, time span) with the headline
figures; then five views: convergence (the metric on new devices with its 95 % CI and, given a
bench JSON, the baselines' curves), communication (bytes per round and cumulative against dense
updates), energy (fleet per round and cumulative, per update across devices), participation (a
device × round grid: accepted, late, rejected with the reason) and presence (a device × time
timeline, the lowest free heap of each device). A series that hardly moves is shown as a number,
not as a line on a magnified axis; a fleet too large for one row a device is shown in aggregate
with the devices that most need attention. Plots are embedded PNGs.

Each view is a module of its own (report_convergence, report_communication, report_energy,
report_participation, report_presence) on the parts they share (report_base); report_page lays
the views out as HTML. This module ties them together and is where the report's names are
imported from.
"""

from __future__ import annotations

import json
from pathlib import Path

from broker_service.observe.digest import Digest, digest
from broker_service.observe.metrics import Point, read_points
from broker_service.observe.report_base import TITLES, VIEWS, Panel, Tile, View, metric_name
from broker_service.observe.report_communication import communication_view
from broker_service.observe.report_convergence import baselines, convergence_view
from broker_service.observe.report_energy import energy_view
from broker_service.observe.report_page import STYLE, bench_table, headline, page
from broker_service.observe.report_participation import participation_view
from broker_service.observe.report_presence import HEAP_ROWS, presence_view

__all__ = [
    "HEAP_ROWS",
    "STYLE",
    "TITLES",
    "VIEWS",
    "Panel",
    "Tile",
    "View",
    "baselines",
    "bench_table",
    "build_views",
    "communication_view",
    "convergence_view",
    "energy_view",
    "headline",
    "metric_name",
    "page",
    "participation_view",
    "presence_view",
    "summary_lines",
    "write_report",
]
"""The report's public names, wherever they are defined."""


def build_views(d: Digest, bench: dict | None = None) -> list[View]:
    """The five views of the report, in page order."""
    return [
        convergence_view(d, bench),
        communication_view(d),
        energy_view(d),
        participation_view(d),
        presence_view(d),
    ]


def summary_lines(points: list[Point]) -> list[str]:
    """A few lines for the terminal."""
    d = digest(points)
    if not d.rounds:
        return ["no rounds in the metrics file"]
    last = d.rounds[-1]
    _, participants = d.series("participants")
    lines = ["rounds: %d, updates: %d" % (int(last["round"]) + 1, int(participants.sum()))]
    if d.metric:
        lines.append(
            "metric on new devices (%s): %.4f -> %.4f"
            % (metric_name(d), d.metric[0][1], d.metric[-1][1])
        )
    lines.append(
        "bytes up %d, down %d; energy %.2f mJ"
        % (
            last.get("bytes_up_total", 0),
            last.get("bytes_down_total", 0),
            last.get("energy_mj_total", 0.0),
        )
    )
    return lines


def write_report(
    metrics: str | Path, out: str | Path, bench: str | Path | None = None
) -> list[str]:
    """Write the HTML page; returns the terminal summary lines."""
    points = read_points(metrics)
    bench_doc = json.loads(Path(bench).read_text()) if bench else None
    d = digest(points)
    Path(out).write_text(page(d, build_views(d, bench_doc), bench_doc))
    return summary_lines(points)
