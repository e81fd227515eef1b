"""The results pages show what benchmarks/results/*.json hold, and nothing else.

(a) every generated block of every docs page is what benchmarks/make_docs.py makes of the
committed JSON now, and the learning curves can be drawn; (b) the benchmark manifest agrees with
the results folder, the pages and the Makefile; (c) the hand-written text of the results pages
quotes no measured figure: a figure lives in a generated block, where it follows the JSON.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from benchmarks import manifest
from benchmarks.docgen import pages
from tests.conftest import REPO_ROOT, load_make_docs

PROSE_PAGES = ("results.md", "methods.md", "appendix.md")
"""The pages whose hand-written text gives reasons, not figures."""
ALLOWED = {
    "95 %": "the confidence level of every interval: a convention, not a measurement",
}
"""Text that looks like a figure but is not one, with why."""
FIGURES = {
    "a decimal number": r"(?<![\w.])\d+\.\d+",
    "a percentage": r"(?<![\w.])\d+(?:[.,]\d+)?\s*%",
    "a multiplier": r"(?<![\w.])\d+(?:[.,]\d+)?\s*[×x](?![\w])",
    "a number with a unit": r"(?<![\w.])\d+(?:[.,]\d+)?\s*(?:ms|mJ|kB|s|J|B)\b",
    "a number of two digits or more": r"(?<![\w.,])\d{2,}(?![\w])",
}
"""What counts as a figure in hand-written text (a small integer such as a section number or
"seeds 0,1,2" does not)."""


@pytest.fixture
def make_docs(tmp_path, monkeypatch):
    """benchmarks.make_docs, drawing its plots into `tmp_path`."""
    return load_make_docs(tmp_path, monkeypatch)


def test_every_generated_block_is_current(make_docs, tmp_path, capsys):
    assert make_docs.main(["--check"]) == 0, (
        "%s\nthe docs are out of date: run .venv/bin/python -m benchmarks.make_docs --write"
        % capsys.readouterr().out
    )
    drawn = make_docs.write_figures(pages.Renderer(make_docs.RESULTS), make_docs.FIGURES)
    assert sorted(p.name for p in tmp_path.glob("curves-*.png")) == sorted(p.name for p in drawn)
    assert drawn and all(p.stat().st_size > 0 for p in drawn)


def test_the_manifest_holds(make_docs):
    assert make_docs.problems() == []


def test_an_archived_results_file_names_the_commit_that_made_it():
    for entry in manifest.ENTRIES:
        if entry.status == manifest.ARCHIVED:
            assert entry.family is None, entry.name
            assert all(f in manifest.MADE_BY for f in entry.outputs), entry.name


def _git_log(path) -> str | None:
    """The short hash of the last commit of `path`, or None outside a git checkout, for a file
    changed since, or in a shallow clone (whose history stops early)."""
    try:
        git = ["git", "-C", str(REPO_ROOT)]
        if subprocess.run(git + ["diff", "--quiet", "HEAD", "--", str(path)]).returncode:
            return None
        shallow = subprocess.run(
            git + ["rev-parse", "--is-shallow-repository"], capture_output=True, text=True
        )
        if shallow.stdout.strip() != "false":
            return None
        out = subprocess.run(
            git + ["log", "--format=%h", "-1", "--", str(path)], capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def test_a_file_without_provenance_names_the_commit_git_gives():
    for entry in manifest.ENTRIES:
        for name in entry.outputs:
            path = REPO_ROOT / "benchmarks" / "results" / name
            if "provenance" in json.loads(path.read_text()):
                continue
            assert name in manifest.MADE_BY, "%s records no provenance: add its commit" % name
            found = _git_log(path)
            if found:
                assert found.startswith(manifest.MADE_BY[name]) or manifest.MADE_BY[
                    name
                ].startswith(found), "%s was made by commit %s" % (name, found)


def makefile_recipes() -> dict[str, list[str]]:
    """Each Makefile target with its recipe lines (continuations joined)."""
    recipes: dict[str, list[str]] = {}
    target = None
    text = (REPO_ROOT / "Makefile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("\t") and target:
            recipes[target].append(" ".join(line.split()))
        elif m := re.match(r"^([\w-]+):", line):
            target = m.group(1)
            recipes[target] = []
        elif not line.startswith("#"):
            target = None
    return recipes


def test_every_current_benchmark_is_re_run_by_its_make_target():
    recipes = makefile_recipes()
    for entry in manifest.ENTRIES:
        if entry.status != manifest.CURRENT:
            continue
        recipe = recipes.get(entry.family)
        assert recipe, "no make target %s" % entry.family
        assert recipe[0].startswith("@bash scripts/setup.sh"), entry.family
        assert recipe[-1] == "$(PY) -m benchmarks.make_docs --write", entry.family
        for command in entry.commands:
            assert "$(PY) " + command in recipe, "make %s does not run %s" % (entry.family, command)


def test_no_make_target_re_runs_an_archived_benchmark():
    lines = [line for recipe in makefile_recipes().values() for line in recipe]
    for entry in manifest.ENTRIES:
        if entry.status == manifest.ARCHIVED:
            for command in entry.commands:
                assert not any(command in line for line in lines), command


def hand_written(text: str) -> str:
    """A page's text with every generated block's content left out."""
    out, at = [], 0
    for _, start, end in pages.find_blocks(text):
        out.append(text[at:start])
        at = end
    return "".join(out) + text[at:]


def figures_in(text: str) -> list[str]:
    """Every figure in `text`, with the line it is on."""
    for allowed in ALLOWED:
        text = text.replace(allowed, "")
    return [
        "%s %r in: %s" % (kind, match.group(0), line.strip())
        for line in text.splitlines()
        for kind, pattern in FIGURES.items()
        for match in re.finditer(pattern, line)
    ]


@pytest.mark.parametrize("page", PROSE_PAGES)
def test_hand_written_text_quotes_no_figure(page):
    text = hand_written((REPO_ROOT / "docs" / page).read_text())
    assert figures_in(text) == []


def test_the_figure_rule_sees_the_figures_that_went_stale():
    stale = [
        "Reptile 0.774 and FedAvg 0.735 are better than TinyMetaFed",
        "FedAvg 1.35 is level with it",
        "414 s of wall time",
        "upload 12.6× smaller, 3.2x fewer",
        "about 60 ms and 4.2 J, 886 B, 24.3 kB",
        "within 5 % of it",
        "1000 rounds",
    ]
    for line in stale:
        assert figures_in(line), line
    for line in ("seeds 0,1,2", "int8 and float16 models", "section 2", "K devices", "95 % CI"):
        assert figures_in(line) == [], line
