"""Run `device_agent.bench` for every use case under the unix-port micropython (256 KB heap),
with the native-compiled kernels and with them stripped (plain), and under CPython; print a
table and write benchmarks/results/device-bench.json.

    .venv/bin/python benchmarks/device_bench.py [--out FILE] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from broker_service.sim.demo import find_micropython
from broker_service.tools.bundle import strip_native

ROOT = Path(__file__).resolve().parents[1]
USE_CASES = ["sine", "omniglot", "kws", "occupancy"]


def run(cmd: list[str], cwd: Path) -> dict:
    out = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def best_of(cmd: list[str], cwd: Path, repeat: int) -> dict:
    """The run with the lowest step_ms of `repeat` runs (least disturbed by other load)."""
    return min((run(cmd, cwd) for _ in range(repeat)), key=lambda r: r["step_ms"])


def plain_copy(folder: Path) -> Path:
    target = folder / "device_agent"
    target.mkdir()
    for module in (ROOT / "device_agent").glob("*.py"):
        (target / module.name).write_text(strip_native(module.read_text()))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/device-bench.json"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    mp = [find_micropython() or "micropython", "-X", "heapsize=256K", "-m", "device_agent.bench"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        plain = plain_copy(Path(tmp))
        for use_case in USE_CASES:
            native = best_of(mp + [use_case], ROOT, args.repeat)
            stripped = best_of(mp + [use_case], plain, args.repeat)
            cpython = best_of(
                [sys.executable, "-m", "device_agent.bench", use_case], ROOT, args.repeat
            )
            native["step_ms_plain"] = stripped["step_ms"]
            native["native_speedup"] = stripped["step_ms"] / native["step_ms"]
            native["step_ms_cpython"] = cpython["step_ms"]
            results.append(native)
            print(
                "%-10s params %5d  MACs/sample %7d  step %7.2f ms (plain %7.2f, x%.2f; "
                "CPython %7.2f)  heap %6d B  payload %4d B"
                % (
                    use_case,
                    native["params"],
                    native["macs_per_sample"],
                    native["step_ms"],
                    native["step_ms_plain"],
                    native["native_speedup"],
                    native["step_ms_cpython"],
                    native["peak_heap_bytes"],
                    native["payload_bytes"],
                )
            )
    doc = {
        "runtime": "micropython unix port, -X heapsize=256K",
        "repeat": args.repeat,
        "results": results,
    }
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
