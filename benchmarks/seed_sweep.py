"""The few-shot criteria over several seeds, with TinyMetaFed's `joint` adaptation off and on.

For each use case and seed: TinyMetaFed with θ_l frozen during adaptation and with θ_l trained
jointly (the default), TinyReptile and no federation, all on the default bench settings and
the same devices and new-device episodes. Prints one line per run and a summary per use case,
and writes JSON (the figures of docs/benchmarks.md's seed table).

    .venv/bin/python benchmarks/seed_sweep.py [--use-cases sine,omniglot,kws,occupancy]
        [--seeds 0,1,2] [--data-dir D] [--json benchmarks/results/seed-sweep.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker_service.core.hyperparams import settings_for  # noqa: E402
from broker_service.sim.bench import _one_blas_thread, criteria, run_one  # noqa: E402
from broker_service.usecases.registry import load_use_case  # noqa: E402

# (label, algorithm, settings overrides)
VARIANTS = (
    ("tinymetafed_frozen", "tinymetafed", {"joint": False}),
    ("tinymetafed_joint", "tinymetafed", {"joint": True}),
    ("tinyreptile", "tinyreptile", {}),
    ("no_federation", "no_federation", {}),
)


def _job(job: tuple) -> tuple:
    """Run one (use case, seed, variant) in a worker; return its key and summary."""
    use_case, data_dir, seed, label, algorithm, overrides = job
    settings = settings_for(use_case, **overrides)
    _, summary = run_one(algorithm, use_case, data_dir, seed, settings, None, False)
    return (use_case, seed, label), summary


def summarise(use_case: str, seed: int, metric: str, runs: dict) -> dict:
    """The criteria of one seed, once for each TinyMetaFed variant."""
    row = {
        "use_case": use_case,
        "seed": seed,
        "metric": metric,
        "final_metric": {label: runs[label]["final_metric"] for label in runs},
        "ci95": {label: runs[label]["final_metric_ci95"] for label in runs},
    }
    for variant in ("tinymetafed_frozen", "tinymetafed_joint"):
        doc = {
            "metric": metric,
            "algorithms": {
                "tinymetafed": runs[variant],
                "tinyreptile": runs["tinyreptile"],
                "no_federation": runs["no_federation"],
            },
        }
        c = criteria(doc)
        row[variant.split("_")[1]] = {
            key: c[key]
            for key in (
                "vs_tinyreptile",
                "vs_tinyreptile_ok",
                "error_vs_no_federation",
                "error_vs_no_federation_ok",
            )
        }
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--use-cases", default="sine,omniglot,kws,occupancy")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data-dir", default=os.environ.get("TINYMETAFED_DATA"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/seed-sweep.json"))
    args = parser.parse_args()
    use_cases = args.use_cases.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    metrics = {u: load_use_case(u, args.data_dir, seed=0).metric for u in use_cases}
    jobs = [
        (u, args.data_dir, s, label, algo, ov)
        for u in use_cases
        for s in seeds
        for label, algo, ov in VARIANTS
    ]
    start = time.perf_counter()
    runs: dict = {}
    with ProcessPoolExecutor(args.workers, initializer=_one_blas_thread) as pool:
        for done, ((u, s, label), summary) in enumerate(pool.map(_job, jobs), 1):
            runs.setdefault((u, s), {})[label] = summary
            print(
                "[%d/%d %.0f s] %-9s seed %d %-19s %s %.4f"
                % (
                    done,
                    len(jobs),
                    time.perf_counter() - start,
                    u,
                    s,
                    label,
                    metrics[u],
                    summary["final_metric"],
                ),
                flush=True,
            )
    rows = [summarise(u, s, metrics[u], runs[(u, s)]) for u in use_cases for s in seeds]
    for r in rows:
        print(
            "%-9s seed %d  frozen: vs TinyReptile %.3f, error/no-fed %.2f | joint: vs "
            "TinyReptile %.3f, error/no-fed %.2f"
            % (
                r["use_case"],
                r["seed"],
                r["frozen"]["vs_tinyreptile"],
                r["frozen"]["error_vs_no_federation"],
                r["joint"]["vs_tinyreptile"],
                r["joint"]["error_vs_no_federation"],
            )
        )
    doc = {
        "seeds": seeds,
        "use_cases": use_cases,
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
