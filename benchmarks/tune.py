"""Tune every algorithm on validation devices by the same search with the same budget.

For each use case (and each fold of a cross-validated one), every algorithm tries the same
candidates (broker_service.sim.tuning: a Latin hypercube over the learning rates and β_0), then
the same number of points around its own best, each meta-trained at the bench's budget in
device updates and scored on the validation devices; the test devices are never used. Writes
benchmarks/results/tuned-<use case>.json, which `tinymetafed bench` reads.

    .venv/bin/python -m benchmarks.tune [--use-cases sine,omniglot,kws,occupancy]
        [--data-dir D] [--workers 2] [--out-dir benchmarks/results] [--quick] [--reuse]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from broker_service.core.hyperparams import settings_for
from broker_service.observe.provenance import load_average, write_results
from broker_service.sim import tuning
from broker_service.sim.bench import _one_blas_thread
from broker_service.usecases.registry import load_use_case, use_case_class


def run_tuning(
    use_cases: list[str],
    data_dir: str | None,
    workers: int,
    quick: bool = False,
    out_dir: str | None = None,
    reuse: bool = False,
) -> list[dict]:
    """Tune the use cases in one pool (stage 1, then stage 2 around each best); write and
    return their tuning documents. With `reuse`, candidates already measured in the existing
    documents (same box, stage and settings) are not run again."""
    start = time.perf_counter()
    started = load_average()
    plans, seconds = {}, {}
    for name in use_cases:
        base = settings_for(name, quick=quick)
        tried = tuning.stage_one(use_case_class(name).FOLDS)
        higher = load_use_case(name, data_dir).higher_is_better
        plans[name] = (base, tried, higher)
        seconds[name] = 0.0
    for stage in (1, 2):
        jobs = []
        for name, (base, tried, higher) in plans.items():
            if stage == 2:
                tuning.add_stage_two(tried, higher)
            if reuse:
                old = tuning.load_tuned(name, out_dir)
                print("%s: %d candidates reused" % (name, tuning.resume(old, tried)))
            jobs += tuning.plan_tuning(name, data_dir, base, tried)
        _run(jobs, plans, seconds, workers, start, stage)
    docs = []
    wall = round(time.perf_counter() - start, 1)
    for name, (base, tried, higher) in plans.items():
        folds = [_splits(name, data_dir, f) for f in range(use_case_class(name).FOLDS)]
        doc = tuning.tuning_document(name, base, tried, folds, seconds[name], higher)
        earlier = (tuning.load_tuned(name, out_dir) or {}).get("runs", []) if reuse else []
        run = {"worker_seconds": round(seconds[name], 1), "wall_seconds_all_use_cases": wall}
        doc["runs"] = [*earlier, dict(run, workers=workers, use_cases=list(plans))]
        path = tuning.tuned_path(name, out_dir)
        write_results(path, doc, started)
        print("wrote %s (%.0f s of worker time)" % (path, seconds[name]))
        docs.append(doc)
    return docs


def _run(jobs: list[tuple], plans: dict, seconds: dict, workers: int, start: float, stage: int):
    """Run the jobs, longest first, and store each validation metric in its candidate."""
    # TinyReptile's K-times-longer runs and the CNN use cases first
    jobs.sort(key=lambda j: (j[0] in ("kws", "omniglot"), int(j[5]["rounds"])), reverse=True)
    with ProcessPoolExecutor(workers, initializer=_one_blas_thread) as pool:
        for done, (key, value, took) in enumerate(pool.map(tuning.tuning_job, jobs), 1):
            name, fold, algorithm, index = key
            plans[name][1][(fold, algorithm)][index]["validation_metric"] = value
            seconds[name] += took
            print(
                "[stage %d %d/%d %.0f s] %s fold %d %-13s #%d: %.4f"
                % (stage, done, len(jobs), time.perf_counter() - start, *key, value),
                flush=True,
            )


def _splits(name: str, data_dir: str | None, fold: int) -> dict:
    extra = {"fold": fold} if use_case_class(name).FOLDS > 1 else {}
    return load_use_case(name, data_dir, seed=tuning.TUNING_SEED, **extra).split_summary()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--use-cases", default="sine,omniglot,kws,occupancy")
    parser.add_argument("--data-dir", default=os.environ.get("TINYMETAFED_DATA"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out-dir", default=str(tuning.RESULTS_DIR))
    parser.add_argument("--quick", action="store_true", help="the bench's --quick budget")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the candidates already measured in --out-dir"
    )
    args = parser.parse_args()
    run_tuning(
        args.use_cases.split(","), args.data_dir, args.workers, args.quick, args.out_dir, args.reuse
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
