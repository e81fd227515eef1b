"""The bench comparison table, built once as strings and rendered as text, Markdown or HTML.

`bench_rows` turns a bench document (broker_service.sim.bench.run_bench) into a header and rows
of cells; the renderers only lay the cells out, so every rendering shows the same columns and
the same figures.
"""

from __future__ import annotations

import html


def bench_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a bench document: one row per algorithm, every cell a string."""
    header = [
        "algorithm",
        "%s ± 95%% CI" % doc["metric"],
        "rounds to %g" % doc["target"],
        "up B/update",
        "down B/update",
        "mJ/update",
        "MACs/update",
        "curve sd",
    ]
    rows = []
    for name, a in doc["algorithms"].items():
        tgt = a["rounds_to_target"]
        rows.append(
            [
                name,
                "%.4f ± %.4f" % (a["final_metric"], a["final_metric_ci95"]),
                "–" if tgt is None else str(tgt),
                "%.0f" % a["bytes_up_per_update"],
                "%.0f" % a["bytes_down_per_update"],
                "%.4f" % a["energy_mj_per_update"],
                "%d" % a["macs_per_update"],
                "%.4f" % a["curve_std"],
            ]
        )
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
