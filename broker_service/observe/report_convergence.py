"""The report's convergence view: the metric on new devices with its 95 % CI, the bench's
learning curves beside it when the bench is of the session's use case, and the device loss.

A curve that hardly moves (and has no baselines to be compared with) is a number, not a plot.
"""

from __future__ import annotations

from broker_service.observe import charts
from broker_service.observe.digest import Digest, is_flat
from broker_service.observe.report_base import (
    TITLES,
    Panel,
    Tile,
    View,
    flat_note,
    metric_name,
    tag_text,
)


def baselines(d: Digest, bench: dict | None) -> dict[str, list]:
    """The bench's learning curves, as [round, metric] pairs, when the bench is of the session's
    use case (a curve point is a {"round", "metric", ...budget} record, or an older pair)."""
    if not bench or bench.get("use_case") not in d.tags.get("use_case", []):
        return {}
    return {
        name: [_round_metric(p) for p in a.get("curve", [])]
        for name, a in bench.get("algorithms", {}).items()
    }


def _round_metric(point: dict | list) -> list:
    """A curve point as [round, metric], from a record or an older pair."""
    if isinstance(point, dict):
        return [point["round"], point["metric"]]
    return list(point)


def convergence_view(d: Digest, bench: dict | None) -> View:
    """The metric on new devices with its CI (and the baselines), and the device loss."""
    view = View("convergence", TITLES["convergence"])
    curves = baselines(d, bench)
    _metric(view, d, curves)
    view.note = _baselines_note(bench, curves)
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


def _metric(view: View, d: Digest, curves: dict[str, list]) -> None:
    """The metric on new devices: a plot with its CI and the baselines, or a tile when flat."""
    name, higher = metric_name(d), d.session.get("higher_is_better")
    algorithm = tag_text(d, "algorithm")
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
                flat_note(values, "%.4g".__mod__, "evaluations"),
            )
        )


def _baselines_note(bench: dict | None, curves: dict[str, list]) -> str:
    """Why the bench's curves are missing, or how to read them."""
    if bench and not curves:
        return "The bench JSON is of use case %s, not of this session: no baselines." % (
            bench.get("use_case")
        )
    if curves:
        return (
            "Dashed: the bench's curves, simulated on the bench's own new devices: compare "
            "their shape and order with this session's curve, not their level."
        )
    return ""
