"""`tinymetafed report`: one self-contained HTML page from a metrics file (plots embedded as PNG),
with the same views as the Grafana dashboard, plus the bench comparison when a bench JSON is
given; and a short terminal summary."""

from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from pathlib import Path

from broker_service.observe.metrics import Point, read_points
from broker_service.observe.tables import bench_rows, html_table

VIEWS = [
    ("convergence", "Convergence: metric on new devices and device loss"),
    ("communication", "Communication: bytes per round, cumulative, and saving against dense"),
    ("energy", "Energy: per device and for the fleet (estimates)"),
    ("participation", "Participation: cohort, late and rejected (by reason)"),
    ("presence", "Device presence and heap"),
]


def _series(points: list[Point], measurement: str, key: str, by: str | None = None):
    """{group: ([x], [y])} of a field against the round number (or time for presence)."""
    out: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    t0 = min((p.ts_ns for p in points), default=0)
    for p in points:
        if p.measurement != measurement or key not in p.fields:
            continue
        group = p.tags.get(by, "") if by else ""
        x = p.fields.get("round", (p.ts_ns - t0) / 1e9)
        out[group][0].append(x)
        out[group][1].append(p.fields[key])
    return out


def _figure(panels):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, lines, xlabel) in zip(axes[0], panels, strict=True):
        for label, (xs, ys) in sorted(lines.items()):
            if xs:
                ax.plot(xs, ys, marker="." if len(xs) < 40 else None, label=label or None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(alpha=0.3)
        plotted = [label for label, (xs, _) in lines.items() if label and xs]
        if plotted and len(plotted) <= 12:
            ax.legend(fontsize=7)
        if not any(xs for xs, _ in lines.values()):
            ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _merge(*groups):
    out = {}
    for prefix, series in groups:
        for key, value in series.items():
            out[(prefix + " " + key).strip()] = value
    return out


def view_panels(points: list[Point]) -> dict[str, list]:
    """The plots of each view: (title, {label: (x, y)}, x label)."""
    r = "round"
    rejected_keys = sorted(
        {
            k
            for p in points
            if p.measurement == "round"
            for k in p.fields
            if k.startswith("rejected_")
        }
    )
    return {
        "convergence": [
            ("metric on new devices", _series(points, "round", "metric", "algorithm"), r),
            ("device loss after adaptation", _series(points, "round", "loss"), r),
        ],
        "communication": [
            (
                "bytes per round",
                _merge(
                    ("up", _series(points, "round", "bytes_up")),
                    ("down", _series(points, "round", "bytes_down")),
                ),
                r,
            ),
            (
                "bytes, cumulative",
                _merge(
                    ("up", _series(points, "round", "bytes_up_total")),
                    ("down", _series(points, "round", "bytes_down_total")),
                ),
                r,
            ),
            ("upload saving against dense (x)", _series(points, "round", "saving"), r),
        ],
        "energy": [
            (
                "energy per update, by device (mJ)",
                _series(points, "device_update", "energy_mj", "device"),
                r,
            ),
            ("fleet energy, cumulative (mJ)", _series(points, "round", "energy_mj_total"), r),
        ],
        "participation": [
            (
                "cohort",
                _merge(
                    ("participants", _series(points, "round", "participants")),
                    ("late", _series(points, "round", "late")),
                ),
                r,
            ),
            (
                "rejected by reason",
                _merge(
                    *[(k[len("rejected_") :], _series(points, "round", k)) for k in rejected_keys]
                )
                or {"none": ([], [])},
                r,
            ),
        ],
        "presence": [
            (
                "online (1) / offline (0)",
                _series(points, "presence", "online", "device"),
                "seconds",
            ),
            ("free heap (bytes)", _series(points, "device_update", "heap_free", "device"), r),
        ],
    }


def summary_lines(points: list[Point]) -> list[str]:
    """A few lines for the terminal."""
    rounds = [p for p in points if p.measurement == "round"]
    if not rounds:
        return ["no rounds in the metrics file"]
    last = rounds[-1].fields
    metrics = [p.fields["metric"] for p in rounds if "metric" in p.fields]
    lines = [
        "rounds: %d, updates: %d"
        % (len(rounds), sum(p.fields.get("participants", 0) for p in rounds))
    ]
    if metrics:
        lines.append("metric on new devices: %.4f -> %.4f" % (metrics[0], metrics[-1]))
    lines.append(
        "bytes up %d, down %d; energy %.2f mJ"
        % (
            last.get("bytes_up_total", 0),
            last.get("bytes_down_total", 0),
            last.get("energy_mj_total", 0.0),
        )
    )
    return lines


def bench_table(doc: dict) -> str:
    """The bench comparison as an HTML table (the columns of `tinymetafed bench`)."""
    return "<h2>Benchmark: %s</h2>%s" % (
        html.escape(doc["use_case"]),
        html_table(*bench_rows(doc)),
    )


def write_report(
    metrics: str | Path, out: str | Path, bench: str | Path | None = None
) -> list[str]:
    """Write the HTML page; returns the terminal summary lines."""
    points = read_points(metrics)
    panels = view_panels(points)
    sections = []
    for key, title in VIEWS:
        sections.append(
            '<section id="%s"><h2>%s</h2><img alt="%s" src="data:image/png;base64,%s">'
            "</section>" % (key, html.escape(title), html.escape(title), _figure(panels[key]))
        )
    if bench:
        sections.append(bench_table(json.loads(Path(bench).read_text())))
    summary = summary_lines(points)
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>TinyMetaFed report</title><style>body{font-family:sans-serif;margin:2em}"
        "img{max-width:100%%}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px}</style></head><body><h1>TinyMetaFed report</h1><p>%s</p>%s"
        "</body></html>\n" % ("<br>".join(html.escape(s) for s in summary), "".join(sections))
    )
    Path(out).write_text(page)
    return summary
