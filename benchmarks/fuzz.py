"""Coverage-guided fuzzing (atheris, libFuzzer) of every decoder, the round ledger and the
agent's message handling; prints and writes how many inputs ran and whether anything failed.

    .venv/bin/python benchmarks/fuzz.py [--runs 100000] [--json benchmarks/results/fuzz.json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = [
    "codec.decode",
    "codec.decode_command",
    "RoundLedger.offer",
    "Agent.on_message",
    "FleetView.update",
]


def child(runs: int, corpus: str) -> None:
    """Runs inside the libFuzzer process (which exits by itself after `runs` inputs)."""
    sys.path.insert(0, str(ROOT))
    import atheris

    with atheris.instrument_imports():
        from tests.fuzz_targets import Targets
    targets = Targets()
    atheris.Setup([sys.argv[0], "-runs=%d" % runs, "-max_len=512", corpus], targets.run)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/fuzz.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.runs, args.child)
        return 0
    sys.path.insert(0, str(ROOT))
    from tests.fuzz_targets import SEEDS

    corpus = Path(tempfile.mkdtemp(prefix="tmf-fuzz-"))
    for i, seed in enumerate(SEEDS):
        for which in range(5):
            (corpus / ("seed-%d-%d" % (i, which))).write_bytes(bytes([which]) + seed)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--runs", str(args.runs), "--child", str(corpus)],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    done = re.search(r"Done (\d+) runs", proc.stderr + proc.stdout)
    inputs = int(done.group(1)) if done else None
    failure = None if proc.returncode == 0 and done else (proc.stderr[-3000:] or "no result")
    doc = {
        "tool": "atheris (libFuzzer, coverage-guided)",
        "inputs": inputs,
        "seconds": round(seconds, 1),
        "inputs_per_second": round(inputs / seconds) if inputs else None,
        "failure": failure,
        "targets": TARGETS,
    }
    print(json.dumps(doc))
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
