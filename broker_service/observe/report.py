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
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from broker_service.observe import charts
from broker_service.observe.charts import human
from broker_service.observe.digest import (
    MAX_ROWS,
    Digest,
    by_round,
    digest,
    is_flat,
    lowest_heap,
    most,
    offline_ns,
    online_count,
    online_spans,
    outcome_counts,
    outcome_grid,
    outcome_labels,
    per_round,
    quantile_bands,
    settled_online,
    troubles,
)
from broker_service.observe.metrics import Point, read_points
from broker_service.observe.tables import bench_rows, html_table

HEAP_ROWS = 30
"""Devices in the lowest-free-heap panel (the lowest ones)."""


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


def _one(d: Digest, key: str) -> str:
    return ", ".join(d.tags.get(key, [])) or "?"


def _flat_note(values, fmt: Callable[[float], str], what: str = "rounds") -> str:
    """Where a flat series lies: 'flat: 12.53 – 12.60 over 40 rounds'."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return "one value"
    return "flat: %s – %s over %d %s" % (fmt(v.min()), fmt(v.max()), len(v), what)


def metric_name(d: Digest) -> str:
    """The metric's name as the session point gave it ("metric" for an older file)."""
    return d.session.get("metric_name") or "metric"


# -- convergence --


def baselines(d: Digest, bench: dict | None) -> dict[str, list]:
    """The bench's learning curves, as [round, metric] pairs, when the bench is of the session's
    use case (a curve point is a {"round", "metric", ...budget} record, or an older pair)."""
    if not bench or bench.get("use_case") not in d.tags.get("use_case", []):
        return {}
    return {
        name: [_round_metric(p) for p in a.get("curve", [])]
        for name, a in bench.get("algorithms", {}).items()
    }


def _round_metric(point) -> list:
    if isinstance(point, dict):
        return [point["round"], point["metric"]]
    return list(point)


def convergence_view(d: Digest, bench: dict | None) -> View:
    """The metric on new devices with its CI (and the baselines), and the device loss."""
    view = View("convergence", TITLES["convergence"])
    name, higher = metric_name(d), d.session.get("higher_is_better")
    algorithm = _one(d, "algorithm")
    curves = baselines(d, bench)
    values = [m for _, m, _ in d.metric]
    if len(values) >= 2 and (curves or not is_flat(values)):
        view.panels.append(
            Panel(
                "%s on new devices (95 %% CI)" % name,
                lambda ax: charts.metric_band(
                    ax, d.metric, name, higher, curves, d.session.get("eval_devices"), algorithm
                ),
                height=3.8,
            )
        )
    elif values:
        view.tiles.append(
            Tile(
                "%.4g" % values[-1],
                "%s on new devices" % name,
                _flat_note(values, "%.4g".__mod__, "evaluations"),
            )
        )
    if bench and not curves:
        view.note = "The bench JSON is of use case %s, not of this session: no baselines." % (
            bench.get("use_case")
        )
    elif curves:
        view.note = (
            "Dashed: the bench's curves, simulated on the bench's own new devices: compare "
            "their shape and order with this session's curve, not their level."
        )
    x, loss = d.series("loss")
    if len(loss) >= 2 and not is_flat(loss):
        view.panels.append(
            Panel(
                "device loss after adaptation (mean of a round's devices)",
                lambda ax: charts.scatter_trend(ax, x, loss, "loss"),
                height=3.8 if view.panels else 3.0,  # as high as the metric beside it
            )
        )
    elif len(loss):
        view.tiles.append(Tile("%.4g" % loss[-1], "device loss after adaptation"))
    return view


# -- communication --


def communication_view(d: Digest) -> View:
    """Bytes per round up and down against dense uploads, cumulative, and the saving."""
    view = View("communication", TITLES["communication"])
    x, up = d.series("bytes_up")
    _, down = d.series("bytes_down")
    _, dense = d.series("dense_bytes_up")
    if not len(x):
        return view
    per_round_series = {"up": up, "up, dense float32": dense, "down": down}
    styles = {
        "up": {"color": charts.PALETTE["up"]},
        "up, dense float32": {"color": charts.PALETTE["dense"], "ls": "--"},
        "down": {"color": charts.PALETTE["down"]},
    }
    if all(is_flat(v) for v in per_round_series.values()):
        for label, v in per_round_series.items():
            view.tiles.append(
                Tile(human(float(np.mean(v)), "B"), "%s per round" % label, _flat_note(v, _bytes))
            )
    else:
        view.panels.append(
            Panel(
                "bytes per round",
                lambda ax: charts.lines_from_zero(ax, x, per_round_series, "B", styles=styles),
            )
        )
    _, saving = d.series("saving")
    if len(saving) and is_flat(saving):
        view.tiles.insert(
            0,
            Tile(
                "%.1f×" % float(np.mean(saving)),
                "fewer bytes up than dense float32 updates",
                _flat_note(saving, "%.2f".__mod__),
            ),
        )
    elif len(saving):
        view.panels.append(Panel("upload saving against dense (×)", _saving_draw(x, saving)))
    cumulative = {
        "up": _total(d, "bytes_up", up),
        "up, dense float32": _total(d, "dense_bytes_up", dense),
        "down": _total(d, "bytes_down", down),
    }
    view.panels.append(
        Panel(
            "bytes, cumulative",
            lambda ax: charts.lines_from_zero(ax, x, cumulative, "B", styles=styles),
        )
    )
    return view


def _total(d: Digest, key: str, each: np.ndarray) -> np.ndarray:
    """The session total of `key` after each round (`<key>_total`: it counts the rounds before
    a restart too), else the running sum of the rounds in the file."""
    _, total = d.series(key + "_total")
    return total if len(total) == len(each) else np.cumsum(each)


def _bytes(v: float) -> str:
    return human(v, "B")


def _saving_draw(x, saving):
    def draw(ax):
        ax.plot(x, saving, color=charts.PALETTE["up"], lw=1.8)
        ax.set_ylim(bottom=1)
        ax.set_xlabel("round", fontsize=9)
        ax.set_ylabel("× fewer bytes than dense", fontsize=9)

    return draw


# -- energy --


def energy_view(d: Digest) -> View:
    """Fleet energy per round and cumulative; the energy of one update across devices."""
    view = View("energy", TITLES["energy"])
    x, total = d.series("energy_mj_total")
    if len(x):
        rounds_complete = x[0] == 0  # a resumed session's first total holds earlier rounds
        each = per_round(total) if rounds_complete else np.diff(total)
        ex = x if rounds_complete else x[1:]
        if is_flat(each):
            view.tiles.append(
                Tile(
                    human(float(np.mean(each)), "mJ"),
                    "fleet energy per round",
                    _flat_note(each, _mj),
                )
            )
        else:
            view.panels.append(
                Panel(
                    "fleet energy per round",
                    lambda ax: charts.bars_from_zero(ax, ex, each, "mJ", charts.PALETTE["energy"]),
                )
            )
        view.panels.append(
            Panel(
                "fleet energy, cumulative",
                lambda ax: charts.lines_from_zero(
                    ax, x, {"cumulative": total}, "mJ", styles={"cumulative": {"color": "#9c6644"}}
                ),
            )
        )
    groups = by_round(d.updates, "energy_mj")
    every = [v for values in groups.values() for v in values]
    if every and is_flat(every):
        view.tiles.append(
            Tile(
                human(float(np.mean(every)), "mJ"),
                "per update, every device",
                _flat_note(every, _mj, "updates"),
            )
        )
    elif every:
        bx, bands = quantile_bands(groups)
        view.panels.append(
            Panel(
                "energy per update across devices",
                lambda ax: charts.quantile_band(ax, bx, bands, "mJ", charts.PALETTE["energy"]),
            )
        )
    return view


def _mj(v: float) -> str:
    return human(v, "mJ")


# -- participation --


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
    keys = sorted({k for r in d.rounds for k in r if k.startswith("rejected_")})
    out = {}
    for key in keys:
        values = np.array([r.get(key, 0) for r in d.rounds], dtype=float)
        if values.any():
            out[key[len("rejected_") :]] = values
    return out


def _participation_panels(d: Digest) -> list[Panel]:
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


def _grid_panel(d: Digest, devices, rounds, labels, title: str) -> Panel:
    grid = outcome_grid(d.participation, devices, rounds, labels)
    return Panel(
        title,
        lambda ax: charts.heat_grid(ax, grid, devices, rounds, labels),
        height=1.3 + 0.16 * len(devices),
        wide=True,
    )


# -- presence --


def presence_view(d: Digest) -> View:
    """Presence as a device × time timeline (or online count and the most offline devices);
    the lowest free heap of each device."""
    view = View("presence", TITLES["presence"])
    spans = {dev: online_spans(ev, d.end_ns) for dev, ev in d.presence.items()}
    if spans:
        view.tiles += _presence_tiles(d, spans)
        view.panels += _presence_panels(d, spans)
    low = lowest_heap(d.updates, d.presence)
    if low:
        shown = sorted(low, key=lambda k: (low[k], k))[:HEAP_ROWS]
        title = "lowest free heap per device" + (
            " (the %d lowest of %d)" % (len(shown), len(low)) if len(low) > len(shown) else ""
        )
        view.panels.append(
            Panel(
                title,
                lambda ax: charts.heap_bars(ax, {k: low[k] for k in shown}),
                height=1.1 + 0.22 * len(shown),
            )
        )
        view.tiles.append(
            Tile(
                human(min(low.values()), "B"),
                "lowest free heap",
                "1 device reports it" if len(low) == 1 else "%d devices report it" % len(low),
            )
        )
    else:
        view.tiles.append(Tile("–", "free heap", "no device reported its heap"))
    return view


def _presence_tiles(d: Digest, spans) -> list[Tile]:
    online_now = sum(1 for s in spans.values() if s and s[-1][2])
    went_offline = sum(1 for s in spans.values() if offline_ns(s) > 0)
    settled = settled_online(d.presence)
    fewest = int(settled.min()) if len(settled) else None
    return [
        Tile("%d / %d" % (online_now, len(spans)), "devices online at the end"),
        Tile(
            "%d" % went_offline,
            "devices offline at some point",
            "never fewer than %d online" % fewest if fewest is not None else "",
        ),
    ]


def _presence_panels(d: Digest, spans) -> list[Panel]:
    if len(spans) <= MAX_ROWS:
        return [
            Panel(
                "presence, device × time (%d devices)" % len(spans),
                lambda ax: charts.timeline(ax, spans, d.start_ns, d.end_ns),
                height=1.3 + 0.16 * len(spans),
                wide=True,
            )
        ]
    times, counts = online_count(d.presence)
    panels = []
    if not is_flat(settled_online(d.presence)):
        panels.append(
            Panel(
                "devices online",
                lambda ax: charts.online_steps(ax, times, counts, len(spans), d.start_ns, d.end_ns),
                wide=True,
            )
        )
    worst = most({dev: offline_ns(s) for dev, s in spans.items()})
    if worst:
        some = {dev: spans[dev] for dev in worst}
        panels.append(
            Panel(
                "the %d devices offline longest" % len(worst),
                lambda ax: charts.timeline(ax, some, d.start_ns, d.end_ns),
                height=1.3 + 0.16 * len(worst),
                wide=True,
            )
        )
    return panels


# -- the page --


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return "%.1f s" % seconds
    if seconds < 7200:
        return "%.0f min" % (seconds / 60)
    return "%.1f h" % (seconds / 3600)


def headline(d: Digest) -> list[Tile]:
    """The session's figures at a glance: rounds, the metric, updates, bytes, energy."""
    tiles = []
    done = int(d.rounds[-1]["round"]) + 1 if d.rounds else 0
    planned = d.session.get("rounds_planned")
    tiles.append(Tile("%d" % done + (" / %d" % planned if planned else ""), "rounds"))
    if d.metric:
        _, last, ci = d.metric[-1]
        first = d.metric[0]
        better = {True: "higher is better", False: "lower is better"}.get(
            d.session.get("higher_is_better"), ""
        )
        tiles.append(
            Tile(
                "%.4g" % last + (" ± %.2g" % ci if ci is not None else ""),
                "%s on new devices after round %d" % (metric_name(d), d.metric[-1][0]),
                "from %.4g before round %d%s"
                % (first[1], first[0] + 1, "; " + better if better else ""),
            )
        )
    last = d.rounds[-1] if d.rounds else {}
    _, participants = d.series("participants")
    tiles.append(
        Tile(
            "%d" % int(participants.sum()),
            "updates",
            "from %d devices" % len({dev for dev, _ in d.participation} or d.devices()),
        )
    )
    if last.get("bytes_up_total"):
        _, dense = d.series("dense_bytes_up")
        dense_total = float(_total(d, "dense_bytes_up", dense)[-1])
        tiles.append(
            Tile(
                human(last["bytes_up_total"], "B"),
                "uploaded",
                "dense float32: %s (%.1f× more)"
                % (human(dense_total, "B"), dense_total / last["bytes_up_total"]),
            )
        )
        tiles.append(Tile(human(last.get("bytes_down_total", 0), "B"), "downloaded"))
    if "energy_mj_total" in last:
        tiles.append(Tile(human(last["energy_mj_total"], "mJ"), "device energy (estimate)"))
    return tiles


def _tiles_html(tiles: list[Tile], css: str = "tiles") -> str:
    cells = "".join(
        '<div class="tile"><div class="v">%s</div><div class="k">%s</div>%s</div>'
        % (
            html.escape(t.value),
            html.escape(t.label),
            '<div class="n">%s</div>' % html.escape(t.note) if t.note else "",
        )
        for t in tiles
    )
    return '<div class="%s">%s</div>' % (css, cells) if tiles else ""


def _view_html(view: View) -> str:
    figures = "".join(
        '<figure class="%s"><figcaption>%s</figcaption>'
        '<img alt="%s" src="data:image/png;base64,%s"></figure>'
        % (
            "panel wide" if p.wide else "panel",
            html.escape(p.title),
            html.escape(p.title),
            charts.png(p.draw, p.height, p.wide),
        )
        for p in view.panels
    )
    note = '<p class="note">%s</p>' % html.escape(view.note) if view.note else ""
    return '<section id="%s"><h2>%s</h2>%s%s<div class="panels">%s</div></section>' % (
        view.key,
        html.escape(view.title),
        note,
        _tiles_html(view.tiles),
        figures,
    )


def build_views(d: Digest, bench: dict | None = None) -> list[View]:
    """The five views of the report, in page order."""
    return [
        convergence_view(d, bench),
        communication_view(d),
        energy_view(d),
        participation_view(d),
        presence_view(d),
    ]


def bench_table(doc: dict) -> str:
    """The bench comparison as an HTML table (the columns of `tinymetafed bench`)."""
    return "<h2>Benchmark: %s</h2>%s" % (
        html.escape(doc["use_case"]),
        html_table(*bench_rows(doc)),
    )


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;
color:#1f2933}
main{max-width:1240px;margin:0 auto;padding:24px 28px}
header{background:#1d4e89;color:#fff;padding:20px 28px}
header h1{margin:0;font-size:24px;font-weight:600}
header .who{font-size:16px;margin-top:4px}
header .when{font-size:13px;opacity:.85;margin-top:2px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:2px solid #d9dee5;padding-bottom:4px}
.tiles,.headline{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.tile{background:#fff;border:1px solid #d9dee5;border-radius:8px;padding:10px 14px;min-width:150px}
.headline .tile{border-left:4px solid #1d4e89}
.tile .v{font-size:22px;font-weight:600}
.tile .k{font-size:12px;color:#52606d}
.tile .n{font-size:11px;color:#7b8794;margin-top:2px}
.panels{display:grid;grid-template-columns:1fr 1fr;gap:12px}
figure{margin:0;background:#fff;border:1px solid #d9dee5;border-radius:8px;padding:8px}
figure.wide{grid-column:1/3}
figcaption{font-size:13px;font-weight:600;margin:0 0 4px 4px}
img{max-width:100%;display:block}
.note{font-size:13px;color:#7b8794}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #d9dee5;padding:4px 8px;font-size:13px}
"""


def page(d: Digest, views: list[View], bench: dict | None) -> str:
    """The HTML page."""
    who = "use case <b>%s</b> · algorithm <b>%s</b> · fleet <b>%s</b>" % tuple(
        html.escape(_one(d, k)) for k in ("use_case", "algorithm", "fleet")
    )
    when = "%s – %s UTC (%s)" % (
        _when(d.start_ns),
        _when(d.end_ns)[11:],
        _duration((d.end_ns - d.start_ns) / 1e9),
    )
    body = "".join(_view_html(v) for v in views)
    if bench:
        body += bench_table(bench)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>TinyMetaFed report: %s</title><style>%s</style></head><body>"
        '<header><h1>TinyMetaFed session report</h1><div class="who">%s</div>'
        '<div class="when">%s</div></header><main>%s%s</main></body></html>\n'
        % (
            html.escape(_one(d, "use_case")),
            STYLE,
            who,
            when,
            _tiles_html(headline(d), "headline"),
            body,
        )
    )


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
