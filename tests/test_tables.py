"""The bench comparison table: one set of cells, rendered as text, Markdown and HTML."""

from __future__ import annotations

from broker_service.observe.report import bench_table
from broker_service.observe.tables import bench_rows, markdown_table, text_table
from broker_service.sim.bench import format_markdown, format_table

DOC = {
    "use_case": "sine",
    "metric": "mse",
    "target": 1.5,
    "rounds": 100,
    "seed": 0,
    "seconds": 12.0,
    "algorithms": {
        name: {
            "final_metric": value,
            "final_metric_ci95": 0.25,
            "rounds_to_target": target,
            "bytes_up_per_update": up,
            "bytes_down_per_update": 4770.7,
            "energy_mj_per_update": 0.6162,
            "macs_per_update": macs,
            "curve_std": 0.0457,
            "updates": 10,
        }
        for name, value, target, up, macs in (
            ("tinymetafed", 3.4107, None, 370.1, 75840),
            ("tinyreptile", 3.4465, 75, 4644.0, 96960),
            ("no_federation", 3.5657, None, 0.0, 0),
        )
    },
}


def test_rows_hold_every_column_as_strings():
    header, rows = bench_rows(DOC)
    assert header[1:3] == ["mse ± 95% CI", "rounds to 1.5"] and len(header) == 8
    assert rows[0] == [
        "tinymetafed",
        "3.4107 ± 0.2500",
        "–",
        "370",
        "4771",
        "0.6162",
        "75840",
        "0.0457",
    ]
    assert all(len(r) == len(header) for r in rows)


def test_text_markdown_and_html_show_the_same_cells():
    header, rows = bench_rows(DOC)
    renderings = {
        "text": format_table(DOC),
        "markdown": format_markdown([DOC]),
        "html": bench_table(DOC),
    }
    for name, text in renderings.items():
        for cell in header + [c for r in rows for c in r]:
            assert cell in text, (name, cell)
    assert "upload saving TinyReptile/TinyMetaFed: 12.5x" in renderings["text"]


def test_text_columns_line_up():
    lines = text_table(*bench_rows(DOC)).splitlines()
    assert len({len(line) for line in lines}) == 1 and set(lines[1]) == {"-"}


def test_markdown_table_shape():
    lines = markdown_table(["a", "b"], [["1", "2"]]).splitlines()
    assert lines == ["| a | b |", "|---|---|", "| 1 | 2 |"]
