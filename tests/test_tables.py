"""The bench comparison tables: one set of cells, rendered as text, Markdown and HTML."""

from __future__ import annotations

from broker_service.observe.report import bench_table
from broker_service.observe.tables import bench_rows, cost_rows, markdown_table, text_table
from broker_service.sim.bench import format_markdown, format_table


def _entry(value, up, macs, target=None, reset=None, binary=False):
    online = {"mean": value, "ci95": 0.25}
    if binary:
        online.update(balanced_accuracy=0.9, f1=None)
    tests = {"online": online, "multipass": {"mean": value - 0.5, "ci95": 0.2}}
    if reset is not None:
        tests["online_head_reset"] = {"mean": reset, "ci95": 0.3}
        tests["multipass_head_reset"] = {"mean": reset - 0.5, "ci95": 0.3}
    return {
        "final_metric": value,
        "final_metric_ci95": 0.25,
        "final_metric_seed_sd": 0.05,
        "tests": tests,
        "rounds": 100,
        "updates": 500 if up < 1000 else 100,
        "bytes_up_per_update": up,
        "bytes_down_per_update": 4770.7,
        "energy_mj_per_update": 0.6162,
        "macs_per_update": macs,
        "fleet_energy_mj": 1234.56,
        "fleet_bytes_up": 1000,
        "fleet_bytes_down": 99000,
        "to_target": target,
        "curve_std": 0.0457,
    }


DOC = {
    "use_case": "sine",
    "metric": "mse",
    "target": 1.5,
    "rounds": 100,
    "cohort": 5,
    "seeds": [0, 1, 2],
    "folds": 1,
    "seed": 0,
    "unit": "task",
    "seconds": 12.0,
    "algorithms": {
        "tinymetafed": _entry(3.4107, 370.1, 75840),
        "tinyreptile": _entry(
            3.4465, 4644.0, 96960, {"round": 75, "updates": 75, "fleet_energy_mj": 9.5}, 3.5
        ),
        "no_federation": _entry(3.5657, 0.0, 0, reset=3.6),
    },
}


def test_rows_hold_every_column_as_strings():
    header, rows = bench_rows(DOC)
    assert header[:4] == ["algorithm", "mse online ± CI", "seed sd", "multi-pass"]
    assert rows[0] == ["tinymetafed", "3.4107 ± 0.2500", "0.0500", "2.9107", "–", "–"]
    assert rows[1][4:] == ["3.5000", "3.0000"]
    header, rows = cost_rows(DOC)
    assert rows[1] == [
        "tinyreptile",
        "100",
        "100",
        "4644",
        "4771",
        "0.6162",
        "96960",
        "1234.6",
        "100",
        "75",
        "75",
        "9.5",
        "0.0457",
    ]
    assert rows[0][9:12] == ["–", "–", "–"]
    assert all(len(r) == len(header) for r in rows)


def test_binary_tasks_add_balanced_accuracy_and_f1():
    doc = dict(DOC, metric="accuracy", algorithms={"a": _entry(0.99, 100, 10, binary=True)})
    header, rows = bench_rows(doc)
    assert header[-2:] == ["balanced acc.", "F1"] and rows[0][-2:] == ["0.9000", "–"]


def test_text_markdown_and_html_show_the_same_cells():
    renderings = {
        "text": format_table(DOC),
        "markdown": format_markdown([DOC]),
    }
    for name, text in renderings.items():
        for header, rows in (bench_rows(DOC), cost_rows(DOC)):
            for cell in header + [c for r in rows for c in r]:
                assert cell in text, (name, cell)
    html = bench_table(DOC)
    header, rows = bench_rows(DOC)
    assert all(cell in html for cell in header + rows[0])
    assert "upload saving TinyReptile/TinyMetaFed: 12.5x" in renderings["text"]


def test_text_columns_line_up():
    for table in (bench_rows(DOC), cost_rows(DOC)):
        lines = text_table(*table).splitlines()
        assert len({len(line) for line in lines}) == 1 and set(lines[1]) == {"-"}


def test_markdown_table_shape():
    lines = markdown_table(["a", "b"], [["1", "2"]]).splitlines()
    assert lines == ["| a | b |", "|---|---|", "| 1 | 2 |"]
