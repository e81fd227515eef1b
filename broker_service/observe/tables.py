"""The bench comparison tables, built once as strings and rendered as text, Markdown or HTML.

`bench_rows` (the few-shot metric on test devices under every protocol) and `cost_rows` (the
budget: rounds, device updates, per-update and fleet costs, and what reaching the target cost)
turn a bench document (broker_service.sim.bench.run_bench) into a header and rows of cells, and
`refusal_rows` what the service's bounds did to each algorithm's updates; the renderers only lay
the cells out, so every rendering shows the same columns and figures.
"""

from __future__ import annotations

import html

HEAD_RESET = "_head_reset"


def _metric(summary: dict | None, ci: bool = True) -> str:
    if summary is None or summary.get("mean") is None:
        return "–"
    if not ci:
        return "%.4f" % summary["mean"]
    return "%.4f ± %.4f" % (summary["mean"], summary["ci95"])


def _extra_shots(doc: dict) -> list[str]:
    """Test keys of the other shot counts (e.g. online_1shot), in the order first seen."""
    keys = []
    for a in doc["algorithms"].values():
        for key in a.get("tests", {}):
            if key.startswith("online_") and key.endswith("shot") and HEAD_RESET not in key:
                keys.append(key)
    return list(dict.fromkeys(keys))


def bench_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the test metrics: one row per algorithm, every cell a string. Online
    (one pass, batch 1) ± 95 % CI over units, the spread over seeds, multi-pass, with the head
    reset (models trained without a split), other shot counts, and for binary tasks balanced
    accuracy and F1."""
    metric = doc["metric"]
    shots = _extra_shots(doc)
    binary = any("f1" in a.get("tests", {}).get("online", {}) for a in doc["algorithms"].values())
    header = [
        "algorithm",
        "%s online ± CI" % metric,
        "seed sd",
        "multi-pass",
        "online, head reset",
        "multi-pass, head reset",
    ]
    header += ["%s, %s" % (metric, k.split("_", 1)[1].replace("shot", "-shot")) for k in shots]
    if binary:
        header += ["balanced acc.", "F1"]
    rows = []
    for name, a in doc["algorithms"].items():
        tests = a.get("tests", {})
        row = [
            name,
            "%.4f ± %.4f" % (a["final_metric"], a["final_metric_ci95"]),
            "%.4f" % a.get("final_metric_seed_sd", 0.0),
            _metric(tests.get("multipass"), ci=False),
            _metric(tests.get("online" + HEAD_RESET), ci=False),
            _metric(tests.get("multipass" + HEAD_RESET), ci=False),
        ]
        row += [_metric(tests.get(k)) for k in shots]
        if binary:
            online = tests.get("online", {})
            row += [_optional(online.get("balanced_accuracy")), _optional(online.get("f1"))]
        rows.append(row)
    return header, rows


def _optional(value) -> str:
    return "–" if value is None else "%.4f" % value


def _target(a: dict, key: str, fmt: str) -> str:
    point = a.get("to_target")
    return "–" if not point else fmt % point[key]


def cost_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the budget: rounds, device updates, per-update bytes, energy and MACs,
    the fleet's energy and bytes over the run (every online device receiving every model), the
    validation curve's first point at the target (device updates, fleet mJ), and the curve's
    spread over its second half."""
    header = [
        "algorithm",
        "rounds",
        "updates",
        "up B/update",
        "down B/update",
        "mJ/update",
        "MACs/update",
        "fleet mJ",
        "fleet kB",
        "target: round",
        "updates",
        "fleet mJ",
        "curve sd",
    ]
    rows = []
    for name, a in doc["algorithms"].items():
        fleet_kb = (a.get("fleet_bytes_up", 0) + a.get("fleet_bytes_down", 0)) / 1000.0
        rows.append(
            [
                name,
                "%d" % a.get("rounds", 0),
                "%d" % a["updates"],
                "%.0f" % a["bytes_up_per_update"],
                "%.0f" % a["bytes_down_per_update"],
                "%.4f" % a["energy_mj_per_update"],
                "%d" % a["macs_per_update"],
                "%.1f" % a.get("fleet_energy_mj", 0.0),
                "%.0f" % fleet_kb,
                _target(a, "round", "%d"),
                _target(a, "updates", "%d"),
                _target(a, "fleet_energy_mj", "%.1f"),
                "%.4f" % a["curve_std"],
            ]
        )
    return header, rows


HONEST_COUNTS = ("refused_updates", "refused_rounds", "downweighted", "capped_rounds")
"""What the service's bounds did to an algorithm's updates, summed over its runs: an honest run
refuses nothing, so these show that the comparison's runs trained on every update."""


def _count(figures: dict, key: str) -> str:
    value = figures.get(key)
    return "–" if value is None else "%d" % value


def refusal_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the bounds' work per algorithm: updates and rounds refused, updates
    down-weighted by device trust, rounds whose step was capped (summed over runs, then per
    seed); '–' where the bench did not record a count."""
    seeds = [str(s) for s in doc.get("seeds", [])]
    header = ["algorithm", "refused updates", "refused rounds", "down-weighted", "capped rounds"]
    header += ["refused updates, seed %s" % s for s in seeds]
    rows = []
    for name, a in doc["algorithms"].items():
        per_seed = a.get("per_seed", {})
        row = [name, *(_count(a, key) for key in HONEST_COUNTS)]
        row += [_count(per_seed.get(s, {}), "refused_updates") for s in seeds]
        rows.append(row)
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Fixed-width columns: the first left-aligned, the others right-aligned, a rule below."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    head = line(header)
    return "\n".join([head, "-" * len(head), *(line(r) for r in rows)])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| %s |" % " | ".join(header), "|%s" % ("---|" * len(header))]
    lines += ["| %s |" % " | ".join(r) for r in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML <table>, every cell escaped."""

    def cells(tag: str, values: list[str]) -> str:
        return "<tr>%s</tr>" % "".join("<%s>%s</%s>" % (tag, html.escape(v), tag) for v in values)

    return "<table>%s%s</table>" % (cells("th", header), "".join(cells("td", r) for r in rows))
