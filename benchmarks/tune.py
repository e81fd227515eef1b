"""Tune every algorithm on validation devices by the same search with the same budget.

For each use case (and each fold of a cross-validated one), every algorithm tries the same
candidates (broker_service.sim.tuning: a Latin hypercube over the learning rates and β_0), each
meta-trained at the bench's budget in device updates and scored on the validation devices; the
test devices are never used. Writes benchmarks/results/tuned-<use case>.json, which
`tinymetafed bench` reads.

    .venv/bin/python benchmarks/tune.py [--use-cases sine,omniglot,kws,occupancy]
        [--data-dir D] [--candidates 10] [--workers 2] [--out-dir benchmarks/results] [--quick]
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
from broker_service.sim import tuning  # noqa: E402
from broker_service.sim.bench import _one_blas_thread  # noqa: E402
from broker_service.usecases.registry import load_use_case, use_case_class  # noqa: E402


def run_tuning(
    use_cases: list[str],
    data_dir: str | None,
    candidates: int,
    workers: int,
    quick: bool = False,
    out_dir: str | None = None,
) -> list[dict]:
    """Tune the use cases in one pool; write and return their tuning documents."""
    points = tuning.candidates(candidates)
    plans = {}
    for name in use_cases:
        base = settings_for(name, quick=quick)
        folds = use_case_class(name).FOLDS
        plans[name] = (base, tuning.plan_tuning(name, data_dir, base, points, folds))
    jobs = [job for _, plan in plans.values() for job in plan]
    # longest first: TinyReptile's K-times-longer runs and the CNN use cases
    jobs.sort(key=lambda j: (j[0] in ("kws", "omniglot"), int(j[5]["rounds"])), reverse=True)
    start = time.perf_counter()
    results, seconds = {}, {}
    with ProcessPoolExecutor(workers, initializer=_one_blas_thread) as pool:
        for done, (key, value, took) in enumerate(pool.map(tuning.tuning_job, jobs), 1):
            results[key] = value
            seconds[key[0]] = seconds.get(key[0], 0.0) + took
            print(
                "[%d/%d %.0f s] %s fold %d %-13s #%d: %.4f"
                % (done, len(jobs), time.perf_counter() - start, *key, value),
                flush=True,
            )
    docs = []
    for name, (base, _) in plans.items():
        folds = [_splits(name, data_dir, f) for f in range(use_case_class(name).FOLDS)]
        higher = load_use_case(name, data_dir).higher_is_better
        doc = tuning.tuning_document(name, base, points, results, folds, seconds[name], higher)
        doc["wall_seconds_all_use_cases"] = round(time.perf_counter() - start, 1)
        doc["workers"] = workers
        path = tuning.tuned_path(name, out_dir)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print("wrote %s (%.0f s of worker time)" % (path, seconds[name]))
        docs.append(doc)
    return docs


def _splits(name: str, data_dir: str | None, fold: int) -> dict:
    extra = {"fold": fold} if use_case_class(name).FOLDS > 1 else {}
    return load_use_case(name, data_dir, seed=tuning.TUNING_SEED, **extra).split_summary()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--use-cases", default="sine,omniglot,kws,occupancy")
    parser.add_argument("--data-dir", default=os.environ.get("TINYMETAFED_DATA"))
    parser.add_argument("--candidates", type=int, default=tuning.CANDIDATES)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out-dir", default=str(tuning.RESULTS_DIR))
    parser.add_argument("--quick", action="store_true", help="the bench's --quick budget")
    args = parser.parse_args()
    run_tuning(
        args.use_cases.split(","),
        args.data_dir,
        args.candidates,
        args.workers,
        args.quick,
        args.out_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
