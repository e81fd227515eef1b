"""The report's presence and memory view: when each device was online (a device × time
timeline, or for a large fleet the online count and the devices offline longest) and the lowest
free heap each device reported.
"""

from __future__ import annotations

from broker_service.observe import charts
from broker_service.observe.charts import human
from broker_service.observe.digest import (
    MAX_ROWS,
    Digest,
    is_flat,
    lowest_heap,
    most,
    offline_ns,
    online_count,
    online_spans,
    settled_online,
)
from broker_service.observe.report_base import TITLES, Panel, Tile, View

HEAP_ROWS = 30
"""Devices in the lowest-free-heap panel (the lowest ones)."""

Spans = dict[str, list[tuple[int, int, bool]]]
"""Each device's presence as (start ns, end ns, online) spans."""


def presence_view(d: Digest) -> View:
    """Presence as a device × time timeline (or online count and the most offline devices);
    the lowest free heap of each device."""
    view = View("presence", TITLES["presence"])
    spans = {dev: online_spans(ev, d.end_ns) for dev, ev in d.presence.items()}
    if spans:
        view.tiles += _presence_tiles(d, spans)
        view.panels += _presence_panels(d, spans)
    _heap(view, d)
    return view


def _heap(view: View, d: Digest) -> None:
    """The lowest free heap of each device (the HEAP_ROWS lowest) and the lowest of all."""
    low = lowest_heap(d.updates, d.presence)
    if not low:
        view.tiles.append(Tile("–", "free heap", "no device reported its heap"))
        return
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


def _presence_tiles(d: Digest, spans: Spans) -> list[Tile]:
    """Devices online at the end, devices offline at some point, and the fewest online."""
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


def _presence_panels(d: Digest, spans: Spans) -> list[Panel]:
    """The timeline of every device, or for a large fleet the online count (unless flat) and
    the timeline of the devices offline longest."""
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
