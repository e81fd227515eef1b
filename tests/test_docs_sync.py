"""The generated blocks of the docs pages (benchmarks/make_docs.py, benchmarks/docgen): how a
block is found and filled, what is refused, and the provenance line under each block. Whether
the committed pages are current is tests/test_docs_pages.py."""

import pytest

from benchmarks.docgen import pages
from benchmarks.docgen.common import provenance_text
from tests.conftest import load_make_docs


def make_docs(tmp_path, monkeypatch):
    """benchmarks.make_docs, drawing its plots into `tmp_path`."""
    return load_make_docs(tmp_path, monkeypatch)


PAGE = (
    "# Title\n\nprose\n\n<!-- generated: a -->\nold\n<!-- end generated: a -->\n\nmore prose\n"
    "<!-- generated: b -->\n<!-- end generated: b -->\n"
)


def test_fill_replaces_each_block_and_keeps_the_hand_written_text():
    filled = pages.fill(PAGE, lambda name: "new %s" % name)
    assert filled == (
        "# Title\n\nprose\n\n<!-- generated: a -->\n\nnew a\n\n<!-- end generated: a -->\n\n"
        "more prose\n<!-- generated: b -->\n\nnew b\n\n<!-- end generated: b -->\n"
    )
    assert pages.fill(filled, lambda name: "new %s" % name) == filled


def test_a_block_left_open_or_crossing_another_is_refused():
    with pytest.raises(pages.BlockError, match="not closed"):
        pages.find_blocks("<!-- generated: a -->\ntext\n")
    with pytest.raises(pages.BlockError, match="not closed"):
        pages.find_blocks(
            "<!-- generated: a -->\n<!-- generated: b -->\n<!-- end generated: b -->\n"
            "<!-- end generated: a -->\n"
        )


def test_an_unknown_block_name_is_an_error(tmp_path):
    renderer = pages.Renderer(tmp_path)
    with pytest.raises(pages.BlockError, match="no block is named nonesuch"):
        renderer("nonesuch")


def test_the_provenance_line_shows_the_record_or_the_commit_that_made_the_file():
    record = {
        "command": "benchmarks/tune.py --data-dir ../data",
        "commit": "0123456789abcdef-dirty",
        "date": "2026-01-02T03:04:05Z",
        "cores": 2,
        "load_at_start": [0.5, 0.4, 0.3],
        "load_at_end": [1.25, 1.0, 0.9],
    }
    text = provenance_text({"provenance": record}, "fedcba9")
    assert text == (
        "made by `benchmarks/tune.py --data-dir ../data`, commit 0123456 with uncommitted "
        "changes, 2026-01-02T03:04:05Z, 2 cores, load 0.50 → 1.25 (one-minute average, start "
        "→ end)"
    )
    assert provenance_text({}, "fedcba9") == "provenance not recorded (made by commit fedcba9)"


def test_the_check_lists_a_stale_block_and_write_makes_it_current(tmp_path, monkeypatch):
    docs = make_docs(tmp_path / "figures", monkeypatch)
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Readme\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text("# Page\n\n<!-- generated: fuzz -->\nold\n<!-- end generated: fuzz -->\n")
    renderer = pages.Renderer(docs.RESULTS)
    assert docs.stale(renderer, tmp_path) == ["docs/page.md: fuzz"]
    assert docs.write_pages(renderer, tmp_path) == ["docs/page.md"]
    assert docs.stale(renderer, tmp_path) == []
    assert "fuzz.json" in page.read_text() and page.read_text().startswith("# Page\n")
