"""Generated blocks in the docs pages: finding them, rendering them, filling them.

A block is the text between `<!-- generated: NAME -->` and `<!-- end generated: NAME -->` on a
page; everything outside the blocks is written by hand and left as it is. NAME is a block of
the registry (a table, with a line per results file saying how the file was made), an
appendix section (`appendix_ENTRY`, one per manifest entry) or `manifest`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from benchmarks import manifest
from broker_service.observe.tables import markdown_table

from .common import NONE, ROOT, listed, provenance_text
from .registry import BLOCKS

START = re.compile(r"<!-- generated: ([A-Za-z0-9_.-]+) -->")
END = "<!-- end generated: %s -->"


class BlockError(ValueError):
    """A page whose blocks cannot be filled: an unknown name, or a block left open."""


def pages(root: Path = ROOT) -> list[Path]:
    """The pages that may hold blocks: every docs page and the README."""
    return [*sorted((root / "docs").glob("*.md")), root / "README.md"]


def find_blocks(text: str) -> list[tuple[str, int, int]]:
    """Each block of a page as (name, where its content starts, where it ends)."""
    out, at = [], 0
    while match := START.search(text, at):
        name = match.group(1)
        end = text.find(END % name, match.end())
        following = START.search(text, match.end())
        if end < 0 or (following and following.start() < end):
            raise BlockError("block %s is not closed by %s" % (name, END % name))
        out.append((name, match.end(), end))
        at = end + len(END % name)
    return out


def fill(text: str, render: Callable[[str], str]) -> str:
    """The page with every block's content replaced by `render(name)`."""
    out, at = [], 0
    for name, start, end in find_blocks(text):
        out += [text[at:start], "\n\n", render(name).strip("\n"), "\n\n"]
        at = end
    return "".join(out) + text[at:]


class Renderer:
    """Renders blocks by name from the results files of one folder, each file read once."""

    def __init__(self, results: Path):
        self.results = results
        self._loaded: dict[str, dict] = {}

    def load(self, name: str) -> dict:
        """A results file, parsed (once)."""
        if name not in self._loaded:
            self._loaded[name] = json.loads((self.results / name).read_text())
        return self._loaded[name]

    def __call__(self, name: str) -> str:
        """A block's Markdown; BlockError for a name nothing renders."""
        if name == "manifest":
            return manifest_table()
        sections = {e.section: e for e in manifest.ENTRIES}
        if name in sections:
            return self.section(sections[name])
        if name not in BLOCKS:
            raise BlockError("no block is named %s" % name)
        return self.table(name)

    def provenance(self, files: tuple[str, ...]) -> str:
        """One line per way the files were made, naming the files."""
        groups: dict[str, list[str]] = {}
        for f in files:
            text = provenance_text(self.load(f), manifest.MADE_BY.get(f))
            groups.setdefault(text, []).append("`%s`" % f)
        return "\n\n".join("*%s*: %s." % (listed(fs), text) for text, fs in groups.items())

    def table(self, name: str) -> str:
        """A registry block: how its files were made, then its Markdown."""
        block = BLOCKS[name]
        body = block.render(*(self.load(f) for f in block.files))
        return self.provenance(block.files) + "\n\n" + body

    def section(self, entry: manifest.Entry) -> str:
        """An entry's appendix section: its heading (saying when it is archived), what it is,
        the commands that make it, then its tables (each under its own heading when there are
        several)."""
        out = ["## " + heading(entry), entry.about, _commands(entry)]
        for name in entry.tables:
            if len(entry.tables) > 1:
                out.append("### " + BLOCKS[name].title)
            out.append(self.table(name))
        return "\n\n".join(out)


def heading(entry: manifest.Entry) -> str:
    """An entry's section heading; an archived one names the commit(s) that made it."""
    if entry.status != manifest.ARCHIVED:
        return entry.title
    commits = listed(dict.fromkeys(manifest.MADE_BY[f] for f in entry.outputs))
    return "%s (archived: made by commit %s, not re-run)" % (entry.title, commits)


def _commands(entry: manifest.Entry) -> str:
    made = listed("`%s`" % _shown(c) for c in entry.commands)
    if entry.family is None:
        return "Made by %s; not re-run." % made
    return "Made by %s; re-run by `make %s`." % (made, entry.family)


def _shown(command: str) -> str:
    """A manifest command as a reader types it."""
    command = command.replace(manifest.DATA, "DATA")
    return ("python " + command) if command.startswith(manifest.MODULE) else command


def manifest_table() -> str:
    """The manifest as a table: each entry's status, make target, commands and files."""
    rows = [
        [
            "[%s](#%s)" % (e.title, _anchor(e)),
            e.status,
            "`make %s`" % e.family if e.family else NONE,
            "<br>".join("`%s`" % _shown(c) for c in e.commands),
            listed("`%s`" % f for f in e.outputs),
        ]
        for e in manifest.ENTRIES
    ]
    return markdown_table(["benchmark", "status", "re-run by", "commands", "results"], rows)


def _anchor(entry: manifest.Entry) -> str:
    """GitHub's anchor of an entry's section heading."""
    slug = re.sub(r"[^\w\- ]", "", heading(entry).lower())
    return slug.replace(" ", "-")


def placed(root: Path = ROOT) -> dict[str, set[str]]:
    """Each block name with the pages (relative to docs/, or README.md) it sits on."""
    out: dict[str, set[str]] = {}
    for page in pages(root):
        for name, _, _ in find_blocks(page.read_text()):
            out.setdefault(name, set()).add(page.name)
    return out
