"""Ablation of TinyMetaFed's outer step on the server: coverage-aware mean and server Adam
(core/serveropt.py), each on/off against Reptile's plain step (the archived results also hold
server momentum and Yogi, options since removed).

Every configuration keeps TinyMetaFed's rates tuned by benchmarks/tune.py (tuned-<use case>.json,
per fold) and changes only the server: the aggregation and the optimiser. Its step size β₀
(`outer_lr`) is chosen on the validation devices by the design of broker_service.sim.tuning
(stage 1: `STAGE_ONE` points of a log-scale Latin hypercube over the configuration's box; stage 2:
`STAGE_TWO` points in a box `REFINE_FACTOR` times narrower each side around the stage-1 best),
at the bench's budget and tuning seed; `reptile_step` is the bench's TinyMetaFed as it is (β₀
from tuned-*.json, no new search) and `reptile_step_wide` searches its β₀ in the wide box the
coverage-aware mean gets, so that a gain of the latter is not only a longer step. Then every
configuration is meta-trained on every seed (and fold) and measured on the test devices as the
bench does (online protocol and multi-pass). The server alone changes, so every configuration
spends the same rounds and device updates, and the same bytes and fleet energy up to the
compressed indices' lengths; the document gives their spread.

Writes benchmarks/results/ablation-outer.json (per use case: the search, each configuration's
test figures with CIs over units, the spread over seeds, the paired difference to
`reptile_step` over units, and the learning curve with its budget).

    .venv/bin/python -m benchmarks.outer [--use-cases sine,omniglot,kws,occupancy]
        [--seeds 0,1,2] [--configs reptile_step,coverage,...] [--data-dir D] [--workers 2]
        [--quick] [--out benchmarks/results/ablation-outer.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from broker_service.core.fewshot import MULTIPASS, ONLINE, ci95
from broker_service.core.hyperparams import settings_for
from broker_service.observe.provenance import write_results
from broker_service.sim import bench, tuning
from broker_service.usecases.registry import load_use_case, use_case_class

ROOT = Path(__file__).resolve().parents[1]

BASELINE = "reptile_step"
CONFIGS: dict[str, tuple[dict, tuple[float, float] | None]] = {
    BASELINE: ({}, None),
    "reptile_step_wide": ({}, (0.1, 30.0)),
    "coverage": ({"coverage_mean": True}, (0.1, 30.0)),
    "adam": ({"server_optimiser": "adam"}, (1e-3, 0.3)),
    "coverage_adam": ({"coverage_mean": True, "server_optimiser": "adam"}, (1e-3, 0.3)),
}
"""Each configuration: its settings over the bench's, and the box its β₀ is searched in (None:
the tuned β₀ of tuned-<use case>.json, whose box stops at 1). Adam's step is about β₀ per
coordinate, whatever the delta's scale."""
STAGE_ONE = 3
STAGE_TWO = 1
SEARCH_FOLDS = 1
"""Folds searched (a cross-validated use case's later folds take fold 0's choice)."""
REFINE_FACTOR = tuning.REFINE_FACTOR
ALGORITHM = "tinymetafed"


def base_settings(name: str, quick: bool, fold: int, config: str) -> dict:
    """The bench's TinyMetaFed settings of a use case and fold with the configuration's."""
    settings = settings_for(name, quick=quick)
    settings.update(tuning.tuned_overrides(tuning.load_tuned(name), ALGORITHM, fold))
    settings.update(CONFIGS[config][0])
    return settings


def _tune(job: tuple) -> tuple[tuple, float, float]:
    """One candidate in a worker: (config, fold, index) with its validation metric."""
    config, name, data_dir, fold, index, settings = job
    settings = dict(settings, eval_every=int(settings["rounds"]) or 1)
    (_, _, _, _), value, took = tuning.tuning_job(
        (name, data_dir, fold, ALGORITHM, index, settings)
    )
    return (name, config, fold, index), value, took


def search(names: list[str], configs: list[str], data_dir, quick: bool, workers: int) -> dict:
    """Stage 1 then stage 2 for every (use case, searched configuration, fold); returns
    {use case: {config: {fold: {"candidates": [...], "chosen": best candidate}}}}."""
    start = time.perf_counter()
    higher = {n: load_use_case(n, data_dir).higher_is_better for n in names}
    tried = {
        (name, config, fold): [
            {"stage": 1, **p} for p in tuning.box_candidates({"outer_lr": box}, STAGE_ONE, 51)
        ]
        for name in names
        for config in configs
        if (box := CONFIGS[config][1]) is not None
        for fold in range(min(SEARCH_FOLDS, use_case_class(name).FOLDS))
    }
    for stage in (1, 2):
        if stage == 2:
            for (name, config, _), points in tried.items():
                lo, hi = CONFIGS[config][1] or (0.0, 0.0)
                best = _best(points, higher[name])["outer_lr"]
                box = (max(lo, best / REFINE_FACTOR), min(hi, best * REFINE_FACTOR))
                points += [
                    {"stage": 2, **p}
                    for p in tuning.box_candidates({"outer_lr": box}, STAGE_TWO, 53)
                ]
        jobs = [
            (
                config,
                name,
                data_dir,
                fold,
                i,
                dict(base_settings(name, quick, fold, config), outer_lr=p["outer_lr"]),
            )
            for (name, config, fold), points in tried.items()
            for i, p in enumerate(points)
            if "validation_metric" not in p
        ]
        jobs.sort(key=lambda j: bench.JOB_WEIGHT.get(j[1], 1.0), reverse=True)
        with ProcessPoolExecutor(workers, initializer=bench._one_blas_thread) as pool:
            for done, (key, value, took) in enumerate(pool.map(_tune, jobs), 1):
                name, config, fold, index = key
                point = tried[(name, config, fold)][index]
                point["validation_metric"] = value
                print(
                    "[search %d: %d/%d, %.0f s] %s %s fold %d outer_lr=%.4g: %.4f (%.0f s)"
                    % (
                        stage,
                        done,
                        len(jobs),
                        time.perf_counter() - start,
                        name,
                        config,
                        fold,
                        point["outer_lr"],
                        value,
                        took,
                    ),
                    flush=True,
                )
    out: dict = {}
    for (name, config, fold), points in tried.items():
        chosen = _best(points, higher[name])
        out.setdefault(name, {}).setdefault(config, {})[fold] = {
            "candidates": points,
            "chosen": chosen,
        }
    return out


def _best(points: list[dict], higher: bool) -> dict:
    measured = [p for p in points if "validation_metric" in p]
    scores = [tuning.score(np.array([p["validation_metric"]]), higher) for p in measured]
    return measured[int(np.argmax(scores))]


def measure(names, configs, seeds, data_dir, quick, workers, searched) -> tuple[dict, dict]:
    """Every configuration on every seed and fold, measured on the test devices as the bench
    does; returns ({key: summary}, {use case: (settings, jobs)})."""
    plans = {}
    all_jobs = []
    for name in names:
        jobs = []
        folds = use_case_class(name).FOLDS
        for seed in seeds:
            for fold in range(folds):
                for config in configs:
                    settings = base_settings(name, quick, fold, config)
                    if config in searched.get(name, {}):
                        by_fold = searched[name][config]
                        chosen = by_fold.get(fold, by_fold[min(by_fold)])["chosen"]
                        settings["outer_lr"] = chosen["outer_lr"]
                    entry = bench.Entry(config, ALGORITHM)
                    jobs.append(bench.Job(name, data_dir, seed, fold, entry, settings))
        plans[name] = (settings_for(name, quick=quick), jobs)
        all_jobs += jobs
    return bench.run_jobs(all_jobs, workers, verbose=True), plans


def paired(base: dict, other: dict) -> dict:
    """The mean over units of (other − base) with its 95 % CI (units both measured)."""
    units = sorted(set(base) & set(other))
    diffs = np.array([other[u] - base[u] for u in units], dtype=np.float64)
    diffs = diffs[np.isfinite(diffs)]
    mean = float(diffs.mean()) if len(diffs) else math.nan
    return {"mean": mean, "ci95": ci95(diffs), "units": len(diffs)}


def _spread(values: list[float]) -> float:
    """(max − min) / min of positive values: how far apart the configurations' budgets are."""
    return float((max(values) - min(values)) / min(values)) if values and min(values) > 0 else 0.0


def use_case_document(name, configs, seeds, data_dir, results, plan, searched) -> dict:
    """One use case's part of the ablation document."""
    settings, jobs = plan
    use_case = bench.cached_use_case(name, data_dir, seeds[0], 0)
    folds = list(range(use_case_class(name).FOLDS))
    mine = {k: v for k, v in results.items() if k[0] == name}
    out: dict = {}
    for config in configs:
        entry = bench.combine_entry(use_case, seeds, folds, config, mine, settings)
        online, multi = entry["tests"][ONLINE], entry["tests"][MULTIPASS]
        out[config] = {
            "settings": CONFIGS[config][0],
            "outer_lr": {
                str(j.fold): j.settings["outer_lr"]
                for j in jobs
                if j.entry.name == config and j.seed == seeds[0]
            },
            "final_metric": online["mean"],
            "final_metric_ci95": online["ci95"],
            "final_metric_seed_sd": online["seed_sd"],
            "per_seed": online["per_seed"],
            "multipass": multi["mean"],
            "multipass_ci95": multi["ci95"],
            "rounds_to_target": entry["rounds_to_target"],
            "to_target": entry["to_target"],
            "budget": {k: entry[k] for k in ("rounds", "updates", "fleet_energy_mj")}
            | {"fleet_bytes": entry["fleet_bytes_up"] + entry["fleet_bytes_down"]},
            "curve": entry["curve"],
            "curve_std": entry["curve_std"],
            "_units": {ONLINE: online["per_unit"], MULTIPASS: multi["per_unit"]},
        }
    budgets = [c["budget"] for c in out.values()]
    units = {config: doc.pop("_units") for config, doc in out.items()}
    for config, doc in out.items():
        if config != BASELINE and BASELINE in out:
            doc["vs_" + BASELINE] = {
                key: paired(units[BASELINE][key], units[config][key]) for key in (ONLINE, MULTIPASS)
            }
    return {
        "metric": use_case.metric,
        "higher_is_better": use_case.higher_is_better,
        "target": use_case.target,
        "rounds": int(settings["rounds"]),
        "cohort": int(settings["cohort"]),
        "top_p": settings["top_p"],
        "folds": len(folds),
        "unit": use_case.unit,
        # the server alone differs: the same rounds and device updates; energy and bytes differ
        # only by the compressed indices' lengths
        "equal_rounds_and_updates": len({(b["rounds"], b["updates"]) for b in budgets}) == 1,
        "fleet_energy_spread": _spread([b["fleet_energy_mj"] for b in budgets]),
        "fleet_bytes_spread": _spread([b["fleet_bytes"] for b in budgets]),
        "search": {
            c: {str(f): v for f, v in by_fold.items()}
            for c, by_fold in searched.get(name, {}).items()
        },
        "configs": out,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--use-cases", default="occupancy,omniglot,sine,kws")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--data-dir", default=os.environ.get("TINYMETAFED_DATA"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="the bench's --quick budget")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/ablation-outer.json"))
    parser.add_argument(
        "--reuse-search",
        action="store_true",
        help="take the step sizes from the search an earlier run saved beside --out",
    )
    args = parser.parse_args()
    names = args.use_cases.split(",")
    configs = args.configs.split(",")
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        parser.error("unknown configs %s; known: %s" % (unknown, ",".join(CONFIGS)))
    seeds = [int(s) for s in args.seeds.split(",")]
    saved = ROOT / "benchmarks/cache" / Path(args.out).with_suffix(".search.json").name
    earlier = json.loads(saved.read_text()) if args.reuse_search and saved.is_file() else {}
    doc = {
        "what": "TinyMetaFed with each server outer step (benchmarks/outer.py); every "
        "configuration at the same rounds, device updates, bytes and fleet energy",
        "seeds": seeds,
        "quick": args.quick,
        "workers": args.workers,
        "search": {
            "design": "outer_lr only (the other rates from tuned-<use case>.json); stage 1: "
            "%d points of a log-scale Latin hypercube over the box, stage 2: %d more in a box "
            "%g times narrower each side around the stage-1 best; validation devices, tuning "
            "seed %d; folds searched: %d (later folds take fold 0's choice)"
            % (STAGE_ONE, STAGE_TWO, REFINE_FACTOR, tuning.TUNING_SEED, SEARCH_FOLDS),
            "boxes": {c: CONFIGS[c][1] for c in configs},
        },
        "configs": {c: CONFIGS[c][0] for c in configs},
        "seconds": 0.0,
        "use_cases": {},
    }
    for name in names:  # one use case at a time, written as soon as it is measured
        start = time.perf_counter()
        if name in earlier:
            searched = {
                name: {c: {int(f): v for f, v in b.items()} for c, b in earlier[name].items()}
            }
            print("%s: search read from %s" % (name, saved))
        else:
            searched = search([name], configs, args.data_dir, args.quick, args.workers)
            earlier.update(searched)
            saved.write_text(json.dumps(earlier, indent=1) + "\n")
        search_seconds = time.perf_counter() - start
        results, plans = measure(
            [name], configs, seeds, args.data_dir, args.quick, args.workers, searched
        )
        part = use_case_document(
            name, configs, seeds, args.data_dir, results, plans[name], searched
        )
        part["seconds"] = round(time.perf_counter() - start, 1)
        part["search_seconds"] = round(search_seconds, 1)
        doc["use_cases"][name] = part
        doc["seconds"] = round(doc["seconds"] + part["seconds"], 1)
        write_results(args.out, doc)
        print("wrote %s with %s (%.0f s)" % (args.out, name, part["seconds"]), flush=True)
    for name, part in doc["use_cases"].items():
        for config, c in part["configs"].items():
            vs = c.get("vs_" + BASELINE, {}).get(ONLINE)
            print(
                "%-9s %-17s %s %.4f ± %.4f (seed sd %.4f)%s"
                % (
                    name,
                    config,
                    part["metric"],
                    c["final_metric"],
                    c["final_metric_ci95"],
                    c["final_metric_seed_sd"],
                    "  Δ %+.4f ± %.4f" % (vs["mean"], vs["ci95"]) if vs else "",
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
