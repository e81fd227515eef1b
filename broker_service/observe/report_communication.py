"""The report's communication view: bytes per round up and down against dense float32 uploads,
the bytes so far, and the upload saving (a number when it hardly moves, else a plot).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from broker_service.observe import charts
from broker_service.observe.charts import human
from broker_service.observe.digest import Digest, is_flat
from broker_service.observe.report_base import TITLES, Panel, Tile, View, flat_note, session_total

STYLES = {
    "up": {"color": charts.PALETTE["up"]},
    "up, dense float32": {"color": charts.PALETTE["dense"], "ls": "--"},
    "down": {"color": charts.PALETTE["down"]},
}
"""The line of each series, per round and cumulative."""


def communication_view(d: Digest) -> View:
    """Bytes per round up and down against dense uploads, cumulative, and the saving."""
    view = View("communication", TITLES["communication"])
    x, up = d.series("bytes_up")
    _, down = d.series("bytes_down")
    _, dense = d.series("dense_bytes_up")
    if not len(x):
        return view
    per_round_series = {"up": up, "up, dense float32": dense, "down": down}
    if all(is_flat(v) for v in per_round_series.values()):
        for label, v in per_round_series.items():
            view.tiles.append(
                Tile(human(float(np.mean(v)), "B"), "%s per round" % label, flat_note(v, _bytes))
            )
    else:
        view.panels.append(
            Panel(
                "bytes per round",
                lambda ax: charts.lines_from_zero(ax, x, per_round_series, "B", styles=STYLES),
            )
        )
    _saving(view, d, x)
    cumulative = {
        "up": session_total(d, "bytes_up", up),
        "up, dense float32": session_total(d, "dense_bytes_up", dense),
        "down": session_total(d, "bytes_down", down),
    }
    view.panels.append(
        Panel(
            "bytes, cumulative",
            lambda ax: charts.lines_from_zero(ax, x, cumulative, "B", styles=STYLES),
        )
    )
    return view


def _saving(view: View, d: Digest, x: np.ndarray) -> None:
    """The upload saving against dense updates: the first tile when flat, else a plot."""
    _, saving = d.series("saving")
    if len(saving) and is_flat(saving):
        view.tiles.insert(
            0,
            Tile(
                "%.1f×" % float(np.mean(saving)),
                "fewer bytes up than dense float32 updates",
                flat_note(saving, "%.2f".__mod__),
            ),
        )
    elif len(saving):
        view.panels.append(Panel("upload saving against dense (×)", _saving_draw(x, saving)))


def _bytes(v: float) -> str:
    """A byte count for a flat series' note."""
    return human(v, "B")


def _saving_draw(x: np.ndarray, saving: np.ndarray) -> Callable:
    """The saving's plot: times fewer bytes than dense, from 1 up."""

    def draw(ax) -> None:
        ax.plot(x, saving, color=charts.PALETTE["up"], lw=1.8)
        ax.set_ylim(bottom=1)
        ax.set_xlabel("round", fontsize=9)
        ax.set_ylabel("× fewer bytes than dense", fontsize=9)

    return draw
