"""Coverage-guided fuzzing (atheris, libFuzzer) of every decoder, the round ledger and the
agent's message handling; prints and writes how many inputs ran and whether anything failed.

    .venv/bin/python -m benchmarks.fuzz [--runs 100000] [--json benchmarks/results/fuzz.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from broker_service.observe.provenance import write_results

ROOT = Path(__file__).resolve().parents[1]


def child(runs: int, corpus: str, max_len: int) -> None:
    """Runs inside the libFuzzer process (which exits by itself after `runs` inputs)."""
    import atheris

    with atheris.instrument_imports():
        from broker_service.testing.fuzz_targets import Targets
    targets = Targets()

    def one_input(data: bytes) -> None:
        """Accepted or rejected alike is fine; a bug raises, which libFuzzer reports as a crash."""
        targets.run(data)

    crashes = "-artifact_prefix=%s/" % Path(corpus).parent  # not the working directory
    atheris.Setup(
        [sys.argv[0], "-runs=%d" % runs, "-max_len=%d" % max_len, crashes, corpus], one_input
    )
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/fuzz.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--max-len", type=int, default=512, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.runs, args.child, args.max_len)
        return 0
    if importlib.util.find_spec("atheris") is None:
        print("atheris is not installed (pip install atheris): nothing measured", file=sys.stderr)
        return 2
    # imported here, not at the top: the child (this module again) must first import the
    # targets inside atheris.instrument_imports() for coverage
    from broker_service.testing.fuzz_targets import SEEDS, TARGETS

    corpus = Path(tempfile.mkdtemp(prefix="tmf-fuzz-")) / "corpus"  # crash files go beside it
    corpus.mkdir()
    for i, seed in enumerate(SEEDS):
        for which in range(len(TARGETS)):
            (corpus / ("seed-%d-%d" % (i, which))).write_bytes(bytes([which]) + seed)
    max_len = max(512, 1 + max(len(seed) for seed in SEEDS))  # whole seeds, and a little room
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.fuzz",
            "--runs",
            str(args.runs),
            "--max-len",
            str(max_len),
            "--child",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
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
        "targets": list(TARGETS),
    }
    print(json.dumps(doc))
    write_results(args.json, doc)
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
