"""The report's page: the header with the session's headline figures, each view as a section of
tiles and embedded PNG plots, the bench table, and the style that lays them out.

The views decide what to show (broker_service.observe.report_*); this module only turns them
into one self-contained HTML page, drawing each panel's plot as it goes.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

from broker_service.observe import charts
from broker_service.observe.charts import human
from broker_service.observe.digest import Digest
from broker_service.observe.report_base import Tile, View, metric_name, session_total, tag_text
from broker_service.observe.tables import bench_rows, html_table

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
"""The page's style sheet (the page carries everything it needs)."""


def headline(d: Digest) -> list[Tile]:
    """The session's figures at a glance: rounds, the metric, updates, bytes, energy."""
    tiles = []
    done = int(d.rounds[-1]["round"]) + 1 if d.rounds else 0
    planned = d.session.get("rounds_planned")
    tiles.append(Tile("%d" % done + (" / %d" % planned if planned else ""), "rounds"))
    if d.metric:
        tiles.append(_metric_tile(d))
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
        tiles += _bytes_tiles(d, last)
    if "energy_mj_total" in last:
        tiles.append(Tile(human(last["energy_mj_total"], "mJ"), "device energy (estimate)"))
    return tiles


def _metric_tile(d: Digest) -> Tile:
    """The last metric on new devices with its CI, against the first."""
    _, last, ci = d.metric[-1]
    first = d.metric[0]
    better = {True: "higher is better", False: "lower is better"}.get(
        d.session.get("higher_is_better"), ""
    )
    return Tile(
        "%.4g" % last + (" ± %.2g" % ci if ci is not None else ""),
        "%s on new devices after round %d" % (metric_name(d), d.metric[-1][0]),
        "from %.4g before round %d%s" % (first[1], first[0] + 1, "; " + better if better else ""),
    )


def _bytes_tiles(d: Digest, last: dict) -> list[Tile]:
    """Bytes uploaded (against dense float32 updates) and downloaded over the session."""
    _, dense = d.series("dense_bytes_up")
    dense_total = float(session_total(d, "dense_bytes_up", dense)[-1])
    return [
        Tile(
            human(last["bytes_up_total"], "B"),
            "uploaded",
            "dense float32: %s (%.1f× more)"
            % (human(dense_total, "B"), dense_total / last["bytes_up_total"]),
        ),
        Tile(human(last.get("bytes_down_total", 0), "B"), "downloaded"),
    ]


def _when(ns: int) -> str:
    """A time as UTC date and time."""
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    """A duration in seconds, minutes or hours, whichever reads best."""
    if seconds < 120:
        return "%.1f s" % seconds
    if seconds < 7200:
        return "%.0f min" % (seconds / 60)
    return "%.1f h" % (seconds / 3600)


def _tiles_html(tiles: list[Tile], css: str = "tiles") -> str:
    """A row of tiles (nothing for none)."""
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
    """A view as a section: title, note, tiles, then each panel drawn as an embedded PNG."""
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


def bench_table(doc: dict) -> str:
    """The bench comparison as an HTML table (the columns of `tinymetafed bench`)."""
    return "<h2>Benchmark: %s</h2>%s" % (
        html.escape(doc["use_case"]),
        html_table(*bench_rows(doc)),
    )


def page(d: Digest, views: list[View], bench: dict | None) -> str:
    """The HTML page."""
    who = "use case <b>%s</b> · algorithm <b>%s</b> · fleet <b>%s</b>" % tuple(
        html.escape(tag_text(d, k)) for k in ("use_case", "algorithm", "fleet")
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
            html.escape(tag_text(d, "use_case")),
            STYLE,
            who,
            when,
            _tiles_html(headline(d), "headline"),
            body,
        )
    )
