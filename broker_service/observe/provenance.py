"""How a results file was made: the command, the commit, the date, the machine's cores and load.

Every benchmark writes `provenance(started)` into its JSON (key "provenance"), so a figure on a
results page can be traced to the run that made it and a wall time read beside the load the
machine had. Paths in the command are written relative to the repository (nothing names the
machine it ran on).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return []


def commit() -> str | None:
    """The checked-out commit, with "-dirty" when tracked files differ from it; None outside a
    git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


def portable_command(argv: list[str]) -> str:
    """The command line with absolute paths made relative to the repository."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if os.path.isabs(value):
            value = os.path.relpath(value, ROOT)
        out.append(key + sep + value)
    return " ".join(out)


def invocation() -> list[str]:
    """The arguments this process was started with, after the interpreter: `-m benchmarks.tune
    --seeds 0` for a module run (as benchmarks/manifest.py records its commands), else sys.argv."""
    orig = list(getattr(sys, "orig_argv", []))
    if "-m" in orig:
        return orig[orig.index("-m") :]
    return list(sys.argv)


STARTED = load_average()
"""The load when this module was first imported: a benchmark script imports it as it starts."""


def provenance(started_load: list[float] | None = None, argv: list[str] | None = None) -> dict:
    """The provenance record of a results file written now: `started_load` is
    load_average() taken when the run began (default: STARTED; the load it ran under is
    between the two)."""
    return {
        "command": portable_command(invocation() if argv is None else argv),
        "commit": commit(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cores": os.cpu_count(),
        "load_at_start": started_load if started_load is not None else STARTED,
        "load_at_end": load_average(),
    }


def write_results(path: str | Path, doc: dict, started_load: list[float] | None = None) -> None:
    """Write a results document as indented JSON with its provenance (key "provenance")."""
    doc["provenance"] = provenance(started_load)
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")
