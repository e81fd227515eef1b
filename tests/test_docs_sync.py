"""docs/benchmarks.md shows what benchmarks/results/*.json hold: its generated part is what
benchmarks/make_docs.py makes of the committed JSON."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_docs(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "benchmarks/make_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "FIGURES", tmp_path)  # the plots: not the committed ones
    return module


def test_the_generated_part_of_the_benchmarks_page_matches_the_results(tmp_path, monkeypatch):
    docs = make_docs(tmp_path, monkeypatch)
    page = (ROOT / "docs/benchmarks.md").read_text()
    assert docs.splice(page, docs.generated_part()) == page, (
        "docs/benchmarks.md is out of date: run .venv/bin/python benchmarks/make_docs.py --write"
    )


def test_splice_keeps_the_hand_written_part(tmp_path, monkeypatch):
    docs = make_docs(tmp_path, monkeypatch)
    page = "# Title\n\nprose\n\n" + docs.MARKER + "\nold\n"
    assert (
        docs.splice(page, docs.MARKER + "\nnew") == "# Title\n\nprose\n\n" + docs.MARKER + "\nnew\n"
    )
