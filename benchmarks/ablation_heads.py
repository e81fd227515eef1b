"""Ablation of θ_l's reconstruction: today's SGD head against the closed-form head, with θ_l
frozen or trained jointly during adaptation, on every use case, over seeds.

Each variant is TinyMetaFed with the bench's tuned settings (benchmarks/results/tuned-*.json,
chosen for the SGD head) and only `head_init` / `joint` changed, meta-trained at the bench's
budget on the same seeds, devices and episodes; no federation runs beside it for the error
ratio. Figures: the last learning-curve point on validation devices (what a default is chosen
by) and the final few-shot metric on test devices (online and multi-pass), with the fleet
energy and MACs of an update. Writes benchmarks/results/ablation-heads.json.

    .venv/bin/python benchmarks/ablation_heads.py [--use-cases sine,omniglot,kws,occupancy]
        [--seeds 0,1,2] [--data-dir D] [--workers 2] [--quick] [--out FILE]
        [--ridges 0.1,10 --out benchmarks/results/ablation-heads-ridge.json]

With --ridges, the rows are instead the closed-form head (joint) at each λ = head_ridge given,
beside the SGD head (joint) and no federation: the sweep of λ on validation devices.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker_service.core.hyperparams import settings_for  # noqa: E402
from broker_service.observe.provenance import write_results  # noqa: E402
from broker_service.sim import bench, tuning  # noqa: E402
from broker_service.usecases.registry import use_case_class  # noqa: E402

VARIANTS = {
    "sgd_joint": {"head_init": "sgd", "joint": True},
    "sgd_frozen": {"head_init": "sgd", "joint": False},
    "closed_form_joint": {"head_init": "closed_form", "joint": True},
    "closed_form_frozen": {"head_init": "closed_form", "joint": False},
}
"""The rows: how θ_l is rebuilt (head_init) and whether it learns during adaptation (joint)."""

BASELINE = "no_federation"


def ridge_variants(ridges: list[float]) -> dict:
    """The rows of a λ sweep: the SGD head and the closed-form head at each λ (joint on)."""
    rows = {"sgd_joint": VARIANTS["sgd_joint"]}
    for ridge in ridges:
        rows["closed_form_joint_ridge_%g" % ridge] = dict(
            VARIANTS["closed_form_joint"], head_ridge=ridge
        )
    return rows


def plan(
    names: list[str], data_dir: str | None, seeds: list[int], quick: bool, variants: dict
) -> dict:
    """{use case: (settings, jobs)}: every variant of TinyMetaFed and no federation."""
    plans = {}
    for name in names:
        settings = settings_for(name, quick=quick)
        tuned = tuning.load_tuned(name)
        jobs = []
        for job in bench.plan_jobs(
            name, data_dir, seeds, settings, tuned, ["tinymetafed", BASELINE], verbose=False
        ):
            if job.entry.name == BASELINE:
                jobs.append(job)
                continue
            for variant, over in variants.items():
                entry = bench.Entry(variant, "tinymetafed")
                jobs.append(
                    dataclasses.replace(job, entry=entry, settings=dict(job.settings, **over))
                )
        plans[name] = (settings, jobs)
    return plans


def summary(
    use_case, seeds: list[int], jobs: list, results: dict, settings: dict, variants: dict
) -> dict:
    """Each row's figures and its error ratio to no federation (test devices, online)."""
    folds = sorted({job.fold for job in jobs})
    rows = {}
    for name in [*variants, BASELINE]:
        entry = bench.combine_entry(use_case, seeds, folds, name, results, settings)
        rows[name] = {
            "validation_metric": entry["curve"][-1]["metric"],
            "test_online": entry["final_metric"],
            "test_online_ci95": entry["final_metric_ci95"],
            "test_online_seed_sd": entry["final_metric_seed_sd"],
            "test_multipass": entry["tests"]["multipass"]["mean"],
            "per_seed": {s: v["final_metric"] for s, v in entry["per_seed"].items()},
            "macs_per_update": entry["macs_per_update"],
            "energy_mj_per_update": entry["energy_mj_per_update"],
            "fleet_energy_mj": entry["fleet_energy_mj"],
            "to_target": entry["to_target"],
        }
    base = rows[BASELINE]["test_online"]
    for row in rows.values():
        row["error_ratio_to_no_federation"] = error_ratio(
            row["test_online"], base, use_case.higher_is_better
        )
    return rows


def error_ratio(value: float, baseline: float, higher_is_better: bool) -> float | None:
    """Error of `value` over the baseline's: (1 − accuracy) ratio, or the MSE ratio."""
    if higher_is_better:
        value, baseline = 1.0 - value, 1.0 - baseline
    return value / baseline if baseline > 0 else None


def main() -> int:
    parser = bench.sweep_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="the bench's --quick budget")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/ablation-heads.json"))
    parser.add_argument("--ridges", help="comma-separated λ values: a sweep instead")
    args = parser.parse_args()
    variants = VARIANTS
    if args.ridges:
        variants = ridge_variants([float(r) for r in args.ridges.split(",")])
    names = args.use_cases.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    plans = plan(names, args.data_dir, seeds, args.quick, variants)
    jobs = [job for _, jobs in plans.values() for job in jobs]
    print("%d runs: %s x %s x seeds %s" % (len(jobs), names, [*variants, BASELINE], seeds))
    results = bench.run_jobs(jobs, args.workers, verbose=True)
    doc = {
        "what": "TinyMetaFed's head reconstruction: SGD steps or closed form, θ_l joint or frozen",
        "seeds": seeds,
        "quick": args.quick,
        "seconds": round(time.perf_counter() - start, 1),
        "use_cases": {},
    }
    for name, (settings, jobs_of) in plans.items():
        use_case = bench.cached_use_case(name, args.data_dir, seeds[0], 0)
        mine = {k: v for k, v in results.items() if k[0] == name}
        rows = summary(use_case, seeds, jobs_of, mine, settings, variants)
        doc["use_cases"][name] = {
            "metric": use_case.metric,
            "folds": use_case_class(name).FOLDS,
            "rounds": int(settings["rounds"]),
            "head_ridge": float(settings["head_ridge"]),
            "rows": rows,
        }
        print("\n%s (%s; validation = last curve point, test = online)" % (name, use_case.metric))
        for row_name, row in rows.items():
            print(
                "  %-19s validation %.4f  test %.4f ± %.4f  error ratio %s  %.1f mJ/update"
                % (
                    row_name,
                    row["validation_metric"],
                    row["test_online"],
                    row["test_online_ci95"],
                    "%.3f" % row["error_ratio_to_no_federation"],
                    row["energy_mj_per_update"],
                )
            )
    write_results(args.out, doc)
    print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
