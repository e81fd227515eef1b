"""The report's plots: one function a kind of panel, each drawing on a matplotlib Axes, and
`png` to render a panel as an embeddable PNG.

The rules every panel follows: quantities with a natural zero (bytes, energy, counts, heap) are
drawn from zero, so a flat series looks flat; the metric is drawn with its confidence band, so a
change can be judged against the noise; a grid of devices keeps one readable row per device.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import numpy as np

PALETTE = {
    "metric": "#1d4e89",
    "up": "#2a9d8f",
    "dense": "#8d99ae",
    "down": "#e76f51",
    "energy": "#e9a23b",
    "accepted": "#2a9d8f",
    "late": "#f4a261",
    "online": "#2a9d8f",
    "offline": "#e63946",
    "grid": "#e5e7eb",
}
REJECTED_COLOURS = ["#c1121f", "#7b2cbf", "#6a040f", "#b5179e", "#3a0ca3", "#9d4edd"]
BASELINE_COLOURS = ["#7b2cbf", "#e76f51", "#2a9d8f", "#6c757d", "#bc6c25", "#ad2831"]
WIDTH_IN = 5.9
WIDE_IN = 12.0


def png(draw: Callable, height: float = 3.0, wide: bool = False, dpi: int = 100) -> str:
    """Base64 PNG of one panel: `draw(ax)` on a fresh figure (no pyplot state is used)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDE_IN if wide else WIDTH_IN, height), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _style(ax)
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def _style(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)
    ax.grid(True, color=PALETTE["grid"], linewidth=0.8)
    ax.set_axisbelow(True)


def human(value: float, unit: str) -> str:
    """A number with an SI prefix: 1850 B -> '1.85 kB', 121.9 mJ -> '122 mJ'."""
    scaled, prefixes = float(value), ["", "k", "M", "G", "T"]
    if unit == "mJ" and abs(scaled) >= 1000:
        scaled, unit, prefixes = scaled / 1000, "J", ["", "k", "M"]
    i = 0
    while abs(scaled) >= 1000 and i < len(prefixes) - 1:
        scaled /= 1000
        i += 1
    digits = 3 if abs(scaled) < 10 else (1 if abs(scaled) < 100 else 0)
    text = ("%%.%df" % digits) % scaled if digits < 3 else "%.3g" % scaled
    return "%s %s%s" % (text, prefixes[i], unit)


def _si_axis(ax, unit: str, axis: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: human(v, unit) if v else "0")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def metric_band(
    ax,
    points: Sequence[tuple[int, float, float | None]],
    name: str,
    higher_is_better: bool | None,
    baselines: Mapping[str, Sequence[Sequence[float]]] | None = None,
    devices: int | None = None,
    algorithm: str | None = None,
) -> None:
    """The metric on new devices against rounds done, with its 95 % CI band, and the bench's
    curves (simulated, same use case, the bench's own new devices) for reference; the bench's
    curve of the session's `algorithm` is dashed in the session's colour."""
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    ci = np.array([p[2] if p[2] is not None else np.nan for p in points], dtype=float)
    colour = PALETTE["metric"]
    if np.isfinite(ci).any():
        ax.fill_between(x, y - ci, y + ci, color=colour, alpha=0.15, lw=0, label="95 % CI")
    label = "this session" + (" (%d new devices)" % devices if devices else "")
    ax.plot(x, y, "-o", color=colour, ms=3.5, lw=2, label=label)
    others = sorted(a for a in (baselines or {}) if a != algorithm)
    for algo, curve in sorted((baselines or {}).items()):
        if curve:
            cx, cy = zip(*curve, strict=True)
            c = colour if algo == algorithm else BASELINE_COLOURS[others.index(algo) % 6]
            ax.plot(cx, cy, "--", color=c, lw=1.5, label="bench: %s" % algo)
    better = {True: "higher is better", False: "lower is better"}.get(higher_is_better)
    ax.set_ylabel(name + (" (%s)" % better if better else ""), fontsize=9)
    ax.set_xlabel("rounds done", fontsize=9)
    if name == "accuracy":
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(0.0, lo), min(1.0, hi))
    ax.legend(fontsize=7, frameon=False, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))


def lines_from_zero(
    ax,
    x: np.ndarray,
    series: Mapping[str, np.ndarray],
    unit: str,
    xlabel: str = "round",
    styles: Mapping[str, dict] | None = None,
) -> None:
    """Lines on an axis from zero (a quantity with a natural zero), SI-formatted."""
    for label, y in series.items():
        style = (styles or {}).get(label, {})
        ax.plot(x, y, label=label, lw=1.8, **style)
    ax.set_ylim(bottom=0)
    _si_axis(ax, unit)
    ax.set_xlabel(xlabel, fontsize=9)
    if len(series) > 1:
        ax.legend(fontsize=7, frameon=False)


def bars_from_zero(ax, x: np.ndarray, y: np.ndarray, unit: str, colour: str) -> None:
    """One bar a round, from zero."""
    ax.bar(x, y, width=0.85, color=colour)
    ax.set_ylim(bottom=0)
    _si_axis(ax, unit)
    ax.set_xlabel("round", fontsize=9)


def scatter_trend(ax, x: np.ndarray, y: np.ndarray, label: str, window: int = 5) -> None:
    """Noisy per-round values as dots, with their rolling median as the line to read."""
    ax.plot(x, y, ".", color=PALETTE["dense"], ms=4, label="per round")
    if len(y) >= window:
        med = np.array([np.median(y[max(0, i - window + 1) : i + 1]) for i in range(len(y))])
        ax.plot(x, med, color=PALETTE["metric"], lw=1.8, label="median of %d rounds" % window)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("round", fontsize=9)
    ax.set_ylabel(label, fontsize=9)
    ax.legend(fontsize=7, frameon=False)


def quantile_band(ax, x: np.ndarray, bands: np.ndarray, unit: str, colour: str) -> None:
    """Per-device values of each round as bands: min–max, the middle half, and the median."""
    ax.fill_between(x, bands[0], bands[4], color=colour, alpha=0.18, lw=0, label="min – max")
    ax.fill_between(x, bands[1], bands[3], color=colour, alpha=0.4, lw=0, label="middle half")
    ax.plot(x, bands[2], color=colour, lw=1.8, label="median")
    ax.set_ylim(bottom=0)
    _si_axis(ax, unit)
    ax.set_xlabel("round", fontsize=9)
    ax.legend(fontsize=7, frameon=False)


def stacked_counts(
    ax, x: Sequence[int], counts: Mapping[str, Sequence[int]], colours: Mapping[str, str]
) -> None:
    """Counts per round stacked by kind (e.g. accepted, late, rejected by reason)."""
    bottom = np.zeros(len(x))
    for label, values in counts.items():
        v = np.asarray(values, dtype=float)
        if v.any():
            ax.bar(x, v, bottom=bottom, width=0.9, color=colours[label], label=label, lw=0)
            bottom += v
    ax.set_xlabel("round", fontsize=9)
    ax.set_ylabel("devices", fontsize=9)
    _legend_above(ax)


def _legend_above(ax, **kw) -> None:
    """A one-line legend above the plot, where it hides no data."""
    ax.legend(fontsize=7, frameon=False, ncol=8, loc="lower left", bbox_to_anchor=(0, 1.0), **kw)


def outcome_colours(labels: Sequence[str]) -> dict[str, str]:
    """A colour for each participation kind: accepted, late, then one per rejection reason."""
    colours = {"accepted": PALETTE["accepted"], "late": PALETTE["late"]}
    rejected = [label for label in labels if label not in colours]
    for i, label in enumerate(rejected):
        colours[label] = REJECTED_COLOURS[i % len(REJECTED_COLOURS)]
    return colours


def heat_grid(
    ax, grid: np.ndarray, devices: Sequence[str], rounds: Sequence[int], labels: Sequence[str]
) -> None:
    """The device × round participation grid: a cell per invitation, coloured by outcome;
    white where a device was not invited."""
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    colours = outcome_colours(labels)
    cmap = ListedColormap(["#ffffff"] + [colours[label] for label in labels])
    norm = BoundaryNorm(np.arange(-0.5, len(labels) + 1.5), cmap.N)
    xs = np.arange(rounds[0] - 0.5, rounds[-1] + 1.0)
    ys = np.arange(-0.5, len(devices))
    edge = {"edgecolors": "#ffffff", "linewidth": 0.4} if len(rounds) <= 150 else {}
    ax.pcolormesh(xs, ys, grid, cmap=cmap, norm=norm, **edge)
    ax.set_ylim(len(devices) - 0.5, -0.5)
    ax.set_yticks(range(len(devices)))
    ax.set_yticklabels(devices, fontsize=6 if len(devices) > 25 else 7)
    ax.set_xlabel("round", fontsize=9)
    ax.grid(False)
    handles = [Patch(color=colours[label], label=label) for label in labels]
    handles.append(Patch(facecolor="#ffffff", edgecolor="#999999", label="not invited"))
    _legend_above(ax, handles=handles)


TIME_UNITS = ((86400.0, "d"), (3600.0, "h"), (60.0, "min"), (1.0, "s"))


def time_unit(span_s: float) -> tuple[float, str]:
    """(seconds per unit, unit) to show a span of `span_s` seconds in: s, min, h or d."""
    for size, name in TIME_UNITS:
        if span_s >= 3 * size:
            return size, name
    return 1.0, "s"


def _elapsed(ns: Sequence[int] | np.ndarray, start_ns: int, size: float) -> np.ndarray:
    return (np.asarray(ns, dtype=np.float64) - start_ns) / 1e9 / size


def _time_axis(ax, start_ns: int, unit: str) -> None:
    started = datetime.fromtimestamp(start_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
    ax.set_xlabel("%s since the session's first point (%s UTC)" % (unit, started), fontsize=9)


def timeline(
    ax,
    spans: Mapping[str, Sequence[tuple[int, int, bool]]],
    start_ns: int,
    end_ns: int,
) -> None:
    """Presence as one row a device over the session: online and offline intervals (blank
    before a device's first presence message)."""
    from matplotlib.patches import Patch

    size, unit = time_unit((end_ns - start_ns) / 1e9)
    devices = sorted(spans)
    for row, device in enumerate(devices):
        for online in (True, False):
            bars = [
                (a, b - a)
                for a, b in (
                    _elapsed([s, e], start_ns, size) for s, e, on in spans[device] if on == online
                )
            ]
            colour = PALETTE["online" if online else "offline"]
            ax.broken_barh(bars, (row - 0.38, 0.76), color=colour, lw=0)
    ax.set_yticks(range(len(devices)))
    ax.set_yticklabels(devices, fontsize=6 if len(devices) > 25 else 7)
    ax.set_ylim(len(devices) - 0.5, -0.5)
    ax.set_xlim(0, max(end_ns - start_ns, 1) / 1e9 / size)
    _time_axis(ax, start_ns, unit)
    handles = [Patch(color=PALETTE[k], label=k) for k in ("online", "offline")]
    _legend_above(ax, handles=handles)


def online_steps(
    ax, times: np.ndarray, counts: np.ndarray, total: int, start_ns: int, end_ns: int
) -> None:
    """How many devices were online over time, out of the `total` known."""
    size, unit = time_unit((end_ns - start_ns) / 1e9)
    t = _elapsed(list(times) + [max(end_ns, int(times[-1]))], start_ns, size)
    c = list(counts) + [counts[-1]]
    ax.step(t, c, where="post", color=PALETTE["online"], lw=1.8)
    ax.fill_between(t, c, step="post", color=PALETTE["online"], alpha=0.2)
    ax.axhline(total, color=PALETTE["dense"], lw=1, ls="--")
    ax.set_ylim(0, total * 1.05 + 1)
    ax.set_xlim(0, max(end_ns - start_ns, 1) / 1e9 / size)
    ax.set_ylabel("devices online (of %d)" % total, fontsize=9)
    _time_axis(ax, start_ns, unit)


def heap_bars(ax, lowest: Mapping[str, float]) -> None:
    """The lowest free heap of each device, lowest first, from zero."""
    devices = sorted(lowest, key=lambda d: (lowest[d], d))
    y = np.arange(len(devices))
    ax.barh(y, [lowest[d] for d in devices], color=PALETTE["up"], height=0.7)
    ax.set_yticks(y)
    ax.set_yticklabels(devices, fontsize=7)
    ax.set_ylim(len(devices) - 0.5, -0.5)
    ax.set_xlim(left=0)
    _si_axis(ax, "B", axis="x")
    for yi, d in zip(y, devices, strict=True):
        ax.text(lowest[d], yi, " " + human(lowest[d], "B"), va="center", fontsize=7)


def days_bars(ax, days: Mapping[str, float], estimated: Sequence[str] = ()) -> None:
    """Each device's projected battery life in days, shortest first, from zero; the devices in
    `estimated` (projected from their stated schedule) are drawn lighter."""
    devices = sorted(days, key=lambda d: (days[d], d))
    y = np.arange(len(devices))
    colours = [PALETTE["dense"] if d in estimated else PALETTE["energy"] for d in devices]
    ax.barh(y, [days[d] for d in devices], color=colours, height=0.7)
    ax.set_yticks(y)
    ax.set_yticklabels(devices, fontsize=7)
    ax.set_ylim(len(devices) - 0.5, -0.5)
    ax.set_xlim(left=0)
    ax.set_xlabel("days", fontsize=9)
    for yi, d in zip(y, devices, strict=True):
        ax.text(
            days[d],
            yi,
            " %.0f d" % days[d] if days[d] >= 10 else " %.1f d" % days[d],
            va="center",
            fontsize=7,
        )
