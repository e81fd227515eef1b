"""The report's energy view (estimates from the device energy model): the fleet's energy per
round and so far, the energy of one update across devices as quantile bands, and each battery
device's projected battery life (observe.battery_life), shortest first.
"""

from __future__ import annotations

import numpy as np

from broker_service.observe import charts
from broker_service.observe.charts import human
from broker_service.observe.digest import Digest, by_round, is_flat, per_round, quantile_bands
from broker_service.observe.report_base import TITLES, Panel, Tile, View, flat_note


def energy_view(d: Digest) -> View:
    """Fleet energy per round and cumulative; the energy of one update across devices."""
    view = View("energy", TITLES["energy"])
    _fleet_energy(view, d)
    _battery(view, d)
    groups = by_round(d.updates, "energy_mj")
    every = [v for values in groups.values() for v in values]
    if every and is_flat(every):
        view.tiles.append(
            Tile(
                human(float(np.mean(every)), "mJ"),
                "per update, every device",
                flat_note(every, _mj, "updates"),
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


BATTERY_ROWS = 30
"""Devices in the battery panel (the shortest lives)."""


def battery_days(d: Digest) -> dict[str, float]:
    """{device: its latest projected battery life in days} of the devices that have one."""
    out = {}
    for device, fields in d.battery.items():
        days = fields.get("battery_days")
        if isinstance(days, (int, float)) and not isinstance(days, bool) and days >= 0:
            out[device] = float(days)
    return out


def _battery(view: View, d: Digest) -> None:
    """The shortest projected battery life (a tile) and each device's (the BATTERY_ROWS
    shortest; those still projected from their stated schedule drawn lighter)."""
    days = battery_days(d)
    if not days:
        return
    shown = sorted(days, key=lambda k: (days[k], k))[:BATTERY_ROWS]
    estimated = [k for k in shown if d.battery[k].get("basis") == "schedule"]
    view.tiles.append(
        Tile(
            "%.0f d" % days[shown[0]] if days[shown[0]] >= 10 else "%.1f d" % days[shown[0]],
            "shortest projected battery life",
            "%s; %d device%s on a battery" % (shown[0], len(days), "" if len(days) == 1 else "s"),
        )
    )
    title = "projected battery life per device" + (
        " (the %d shortest of %d)" % (len(shown), len(days)) if len(days) > len(shown) else ""
    )
    view.panels.append(
        Panel(
            title,
            lambda ax: charts.days_bars(ax, {k: days[k] for k in shown}, estimated),
            height=1.1 + 0.22 * len(shown),
        )
    )


def _fleet_energy(view: View, d: Digest) -> None:
    """The fleet's energy per round (a tile when flat, else bars) and cumulative."""
    x, total = d.series("energy_mj_total")
    if not len(x):
        return
    rounds_complete = x[0] == 0  # a resumed session's first total holds earlier rounds
    each = per_round(total) if rounds_complete else np.diff(total)
    ex = x if rounds_complete else x[1:]
    if is_flat(each):
        view.tiles.append(
            Tile(human(float(np.mean(each)), "mJ"), "fleet energy per round", flat_note(each, _mj))
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


def _mj(v: float) -> str:
    """An energy for a flat series' note."""
    return human(v, "mJ")
