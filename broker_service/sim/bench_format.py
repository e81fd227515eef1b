"""Bench documents as text: the terminal's fixed-width tables and the docs' Markdown sections.

The cells come from broker_service.observe.tables (the one set of columns the text, Markdown
and HTML tables share) and the claims' lines from broker_service.sim.claims; this module only
lays them out, so the figures a reader sees are the document's whatever the medium.
"""

from __future__ import annotations

from broker_service.observe.tables import bench_rows, cost_rows, markdown_table, text_table
from broker_service.sim.claims import claim_lines


def format_table(doc: dict) -> str:
    """The two tables of a bench document as fixed-width text, with the upload saving."""
    lines = [text_table(*bench_rows(doc)), "", text_table(*cost_rows(doc))]
    algos = doc["algorithms"]
    if "tinymetafed" in algos and "tinyreptile" in algos and algos["tinymetafed"]["updates"]:
        ratio = (
            algos["tinyreptile"]["bytes_up_per_update"]
            / algos["tinymetafed"]["bytes_up_per_update"]
        )
        lines.append("upload saving TinyReptile/TinyMetaFed: %.1fx" % ratio)
    for claim in doc.get("criteria", {}).values():
        lines.append("%s: %s" % (claim["claim"], claim["verdict"]))
    return "\n".join(lines)


def format_markdown(docs: list[dict]) -> str:
    """Markdown tables of several bench documents (one section per use case), each followed by
    its claims with the comparisons they rest on."""
    out = []
    for doc in docs:
        out.append(_heading(doc))
        out.append(markdown_table(*bench_rows(doc)))
        out.append("")
        out.append(markdown_table(*cost_rows(doc)))
        out.append("")
        out.extend(claim_lines(doc))
        out.append("")
    return "\n".join(out)


def _heading(doc: dict) -> str:
    """A use case's section heading: its metric, rounds, cohort, seeds, folds and run time."""
    return "### %s (%s, %d rounds, K = %d, seeds %s%s, %.0f s)\n" % (
        doc["use_case"],
        doc["metric"],
        doc["rounds"],
        doc["cohort"],
        ",".join(str(s) for s in doc["seeds"]),
        ", %d folds" % doc["folds"] if doc["folds"] > 1 else "",
        doc["seconds"],
    )
