"""Fill the generated blocks of the docs pages from benchmarks/results/*.json, and draw the
learning curves docs/figures/curves-<use case>.png (metric on validation devices against device
updates and against fleet energy).

A page holds a block as `<!-- generated: NAME -->` ... `<!-- end generated: NAME -->`; NAME is
a renderer of benchmarks/docgen/registry.py, an appendix section `appendix_ENTRY` of the
manifest (benchmarks/manifest.py), or `manifest`. Everything outside the blocks is written by
hand. The manifest is checked first: every results file in it, every file it names present,
every block it feeds on a page.

    .venv/bin/python -m benchmarks.make_docs              # check: list stale blocks, exit 1
    .venv/bin/python -m benchmarks.make_docs --check      # the same
    .venv/bin/python -m benchmarks.make_docs --write      # fill every block, draw the curves
    .venv/bin/python -m benchmarks.make_docs --list       # every block: its files and pages
    .venv/bin/python -m benchmarks.make_docs --manifest   # the manifest as a table
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchmarks import manifest
from benchmarks.docgen import pages as blocks
from benchmarks.docgen.common import bench_files
from benchmarks.docgen.figures import curve_figure
from benchmarks.docgen.registry import BLOCKS

ROOT = Path(__file__).resolve().parents[1]

RESULTS = Path(os.environ.get("TINYMETAFED_RESULTS", ROOT / "benchmarks" / "results"))
FIGURES = ROOT / "docs" / "figures"


def problems() -> list[str]:
    """What the manifest says is wrong with the results, the registry or the pages."""
    return manifest.problems(RESULTS, blocks.placed(ROOT))


def stale(renderer: blocks.Renderer, root: Path = ROOT) -> list[str]:
    """'page: NAME' for every block whose text differs from what its renderer makes now."""
    out = []
    for page in blocks.pages(root):
        text = page.read_text()
        for name, start, end in blocks.find_blocks(text):
            if text[start:end] != "\n\n%s\n\n" % renderer(name).strip("\n"):
                out.append("%s: %s" % (page.relative_to(root), name))
    return out


def write_pages(renderer: blocks.Renderer, root: Path = ROOT) -> list[str]:
    """Fill every block of every page; returns the pages that changed."""
    changed = []
    for page in blocks.pages(root):
        text = page.read_text()
        filled = blocks.fill(text, renderer)
        if filled != text:
            page.write_text(filled)
            changed.append(str(page.relative_to(root)))
    return changed


def write_figures(renderer: blocks.Renderer, figures: Path) -> list[Path]:
    """Draw the learning curves of every bench document into `figures`."""
    return [curve_figure(renderer.load(f), figures) for f in bench_files()]


def list_blocks() -> str:
    """Every block name with the files it reads and the pages it sits on."""
    where = blocks.placed(ROOT)
    names = [*BLOCKS, *(e.section for e in manifest.ENTRIES), "manifest"]
    return "\n".join(
        "%-28s %-60s %s"
        % (n, " ".join(BLOCKS[n].files) if n in BLOCKS else "", " ".join(sorted(where.get(n, ()))))
        for n in names
    )


def check(renderer: blocks.Renderer) -> int:
    """Exit status of the check: 0 when every block is current (the curves are drawn into a
    temporary folder, so a broken plot fails too)."""
    out_of_date = stale(renderer)
    with tempfile.TemporaryDirectory() as tmp:
        write_figures(renderer, Path(tmp))
    for line in out_of_date:
        print("stale: %s" % line)
    if out_of_date:
        print("run: .venv/bin/python -m benchmarks.make_docs --write")
    return 1 if out_of_date else 0


def main(argv: list[str] | None = None) -> int:
    """Check or write the docs' generated blocks (see the module's docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    for flag in ("--check", "--write", "--list", "--manifest"):
        mode.add_argument(flag, action="store_true")
    args = parser.parse_args(argv)
    if args.list or args.manifest:
        print(list_blocks() if args.list else blocks.manifest_table())
        return 0
    try:
        return run(args.write)
    except blocks.BlockError as error:
        print("error: %s" % error)
        return 2


def run(write: bool) -> int:
    """Check the manifest, then check the blocks (exit status 1 when one is stale) or write
    them and the learning curves."""
    found = problems()
    for line in found:
        print("manifest: %s" % line)
    if found:
        return 1
    renderer = blocks.Renderer(RESULTS)
    if not write:
        return check(renderer)
    for page in write_pages(renderer):
        print("wrote %s" % page)
    for path in write_figures(renderer, FIGURES):
        print("drew %s" % (path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
