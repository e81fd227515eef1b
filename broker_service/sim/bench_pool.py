"""Pooling the bench's job summaries into one JSON document per use case (README: benchmark).

Test metrics are pooled per unit (task, speaker or day: a unit's value is its mean over seeds,
its folds pooled) and their confidence intervals are over units, with the spread over seeds
beside them; costs and learning curves are averaged over runs. The document also states the
protocol, the splits, the tuned settings each entry ran with, the price of its energy figures
(sim.pricing: what benchmarks/reprice.py re-prices from), the paper's claims
(broker_service.sim.claims), the ablations against TinyMetaFed and, over several seeds, each
seed's verdicts.
"""

from __future__ import annotations

import numpy as np

from broker_service.core.fewshot import MULTIPASS, ONLINE, summarise_units
from broker_service.core.hyperparams import MULTIPASS as MULTIPASS_PASSES
from broker_service.core.hyperparams import TUNED
from broker_service.sim import simulation
from broker_service.sim.bench_plan import Job
from broker_service.sim.claims import criteria, paired_difference
from broker_service.sim.pricing import energy_model
from broker_service.sim.usecase_cache import cached_use_case, use_case_options
from broker_service.usecases.base import UseCase

REFUSALS = ("capped_rounds", "refused_updates", "refused_rounds", "downweighted")
"""What the service's bounds did to a run, recorded per algorithm and per seed."""
PAIRED = (ONLINE, MULTIPASS)
"""The test keys whose per-unit values the document keeps, for the paired comparisons."""
MEANS = (
    "rounds",
    "updates",
    "bytes_up_per_update",
    "bytes_down_per_update",
    "radio_bytes_per_update",
    "energy_mj_per_update",
    "macs_per_update",
    "model_bytes",
    "fleet_bytes_up",
    "fleet_bytes_down",
    "fleet_energy_mj",
    "curve_std",
    "seconds",
)
"""The figures of a run an entry's document gives as their mean over its runs."""
COUNTS = (
    "rounds",
    "updates",
    "macs_per_update",
    "model_bytes",
    "fleet_bytes_up",
    "fleet_bytes_down",
)
"""The means of MEANS that are counts, given rounded to whole numbers."""


def bench_document(
    use_case: UseCase,
    seeds: list[int],
    settings: dict,
    tuned: dict | None,
    jobs: list[Job],
    results: dict,
    quick: bool,
    seconds: float,
    board: str,
) -> dict:
    """The JSON document of one use case (README: benchmark) from its jobs' summaries."""
    names = list(dict.fromkeys(job.entry.name for job in jobs))
    folds = sorted({job.fold for job in jobs})
    algos = {name: combine_entry(use_case, seeds, folds, name, results, settings) for name in names}
    doc = {
        "use_case": use_case.name,
        "seeds": seeds,
        "seed": seeds[0],
        "folds": len(folds),
        "rounds": int(settings["rounds"]),
        "cohort": int(settings["cohort"]),
        "metric": use_case.metric,
        "target": use_case.target,
        "unit": use_case.unit,
        "quick": quick,
        "board": board,
        "energy_model": energy_model(board),
        "seconds": seconds,
        "settings": settings,
        "tuned": _tuned_summary(tuned, jobs),
        "protocol": protocol_summary(use_case, settings),
        "splits": _split_summaries(use_case, jobs),
        "algorithms": algos,
    }
    doc["criteria"] = criteria(doc)
    ablated = ablation_summary(doc, jobs)
    if ablated:
        doc["ablations"] = ablated
    if len(seeds) > 1:
        doc["per_seed_verdicts"] = {
            str(seed): {k: c["verdict"] for k, c in _seed_criteria(doc, use_case, seed, results)}
            for seed in seeds
        }
    return doc


def ablation_summary(doc: dict, jobs: list[Job]) -> dict:
    """Each ablation run against TinyMetaFed's (same rounds, cohort, seeds and test devices):
    its overrides, the online test metric of both, and the paired difference over units."""
    out = {}
    base = doc["algorithms"].get("tinymetafed")
    for entry in dict.fromkeys(job.entry for job in jobs):
        if not (entry.overrides or entry.schedule) or base is None:
            continue
        mine = doc["algorithms"][entry.name]
        out[entry.name] = {
            "overrides": dict(entry.overrides),
            **({"schedule": dict(entry.schedule)} if entry.schedule else {}),
            "metric": mine["final_metric"],
            "baseline": base["final_metric"],
            "paired_vs_tinymetafed": paired_difference(doc, entry.name, "tinymetafed"),
            "updates": mine["updates"],
            "baseline_updates": base["updates"],
        }
    return out


def _seed_criteria(doc: dict, use_case: UseCase, seed: int, results: dict):
    """The claims on one seed alone (its folds), for the consistency over seeds."""
    folds = list(range(doc["folds"]))
    algos = {
        name: combine_entry(use_case, [seed], folds, name, results, doc["settings"])
        for name in doc["algorithms"]
    }
    return criteria(dict(doc, algorithms=algos)).items()


def _tuned_summary(tuned: dict | None, jobs: list[Job]) -> dict:
    """Which file the settings came from, and each entry's tuned values per fold."""
    chosen: dict = {}
    for job in jobs:
        values = {k: job.settings[k] for k in TUNED}
        chosen.setdefault(job.entry.name, {})[str(job.fold)] = values
    source = None
    if tuned:
        source = "benchmarks/results/tuned-%s.json" % tuned["use_case"]
    return {"from": source, "values": chosen}


def _split_summaries(use_case: UseCase, jobs: list[Job]) -> list[dict]:
    """Which devices each fold's split puts in training, validation and test."""
    folds = sorted({job.fold for job in jobs})
    seed = jobs[0].seed
    options = use_case_options(use_case.name, jobs[0].settings)
    return [
        cached_use_case(use_case.name, jobs[0].data_dir, seed, f, options).split_summary()
        for f in folds
    ]


def protocol_summary(use_case: UseCase, settings: dict) -> dict:
    """The evaluation protocol in words and numbers, for the JSON and the docs."""
    epochs, head = MULTIPASS_PASSES[use_case.name]
    return {
        "learning_curve": "validation devices, %d episodes, every %d rounds, online"
        % (int(settings["eval_devices"]), int(settings["eval_every"])),
        "final": "test devices, %d episodes per seed and fold" % int(settings["final_devices"]),
        "online": "1 pass, batch 1; split: first %.2g of the pass head-only"
        % float(settings["eval_head_epochs"]),
        "multipass": "%d passes, batch 1; split: first %g passes head-only" % (epochs, head),
        "shots": [s or "default" for s in use_case.eval_shots],
        "unit": use_case.unit,
        "ci": "95 %% normal CI over %ss (a unit's value is its mean over seeds)" % use_case.unit,
    }


def combine_entry(
    use_case: UseCase,
    seeds: list[int],
    folds: list[int],
    name: str,
    results: dict,
    settings: dict,
) -> dict:
    """One entry's figures over seeds and folds: test metrics per unit (averaged over seeds) with
    CIs over units and the spread over seeds; costs and learning curves averaged over runs."""
    runs = [results[(use_case.name, s, f, name)] for s in seeds for f in folds]
    by_seed = {s: [results[(use_case.name, s, f, name)] for f in folds] for s in seeds}
    tests = {key: _combine_test(use_case, by_seed, key) for key in runs[0]["tests"]}
    curve = _mean_curve([r["curve"] for r in runs])
    out = _mean_costs(runs)
    # what the service's bounds did to the runs (core.bounds), summed over them: rounds whose
    # step the growth bound scaled down, updates refused, rounds whose step was refused,
    # updates device trust weighed down; an honest run refuses nothing
    out.update(_refusal_totals(runs))
    head = tests[ONLINE]
    out.update(
        {
            "final_metric": head["mean"],
            "final_metric_ci95": head["ci95"],
            "final_metric_seed_sd": head["seed_sd"],
            "units": head["units"],
            "tests": tests,
            "curve": curve,
            "to_target": simulation.first_at_target(
                curve, use_case.target, use_case.higher_is_better
            ),
            "per_seed": {str(s): _seed_figures(use_case, tests, s, by_seed[s]) for s in seeds},
        }
    )
    out["rounds_to_target"] = out["to_target"]["round"] if out["to_target"] else None
    if all("staleness" in r for r in runs):
        out["staleness"] = _mean_tree([r["staleness"] for r in runs])
    if all("asynchronous" in r for r in runs):  # an asynchronous entry (sim.buffered)
        out["asynchronous"] = _mean_tree([r["asynchronous"] for r in runs])
    return out


def _mean_costs(runs: list[dict]) -> dict:
    """The mean over runs of each of MEANS, the COUNTS among them rounded to integers."""
    out: dict = {key: float(np.mean([r[key] for r in runs])) for key in MEANS}
    out.update({key: int(round(out[key])) for key in COUNTS})
    return out


def _refusal_totals(runs: list[dict]) -> dict[str, int]:
    """Each of REFUSALS summed over the runs (0 for a run that does not record it)."""
    return {key: int(sum(r.get(key, 0) for r in runs)) for key in REFUSALS}


def _seed_figures(use_case: UseCase, tests: dict, seed: int, runs: list[dict]) -> dict:
    """One seed's own figures (its folds' runs): test metric, curve spread, updates to the
    target and what the bounds refused."""
    return {
        "final_metric": tests[ONLINE]["per_seed"][str(seed)],
        "curve_std": float(np.mean([r["curve_std"] for r in runs])),
        "to_target_updates": _to_target_updates(use_case, runs),
        **_refusal_totals(runs),
    }


def _mean_tree(docs: list[dict]) -> dict:
    """The mean over runs of every number of same-shaped nested dicts (None where undefined)."""
    out: dict = {}
    for key, value in docs[0].items():
        if isinstance(value, dict):
            out[key] = _mean_tree([d[key] for d in docs])
        else:
            defined = [d[key] for d in docs if d[key] is not None]
            out[key] = float(np.mean(defined)) if defined else None
    return out


def _to_target_updates(use_case: UseCase, runs: list[dict]) -> float | None:
    """Device updates until the runs' mean learning curve first reaches the target (or None)."""
    point = simulation.first_at_target(
        _mean_curve([r["curve"] for r in runs]), use_case.target, use_case.higher_is_better
    )
    return point["updates"] if point else None


def _mean_curve(curves: list[list[dict]]) -> list[dict]:
    """The pointwise mean of curves measured at the same rounds."""
    out = []
    for points in zip(*curves, strict=True):
        mean = {k: float(np.mean([p[k] for p in points])) for k in points[0]}
        mean["round"] = int(points[0]["round"])
        out.append(mean)
    return out


def unit_key(use_case: UseCase, seed: int, unit: str) -> str:
    """Tasks drawn per seed are distinct units; speakers and days are the same on every seed."""
    return ("s%d/%s" % (seed, unit)) if use_case.unit == "task" else unit


def _combine_test(use_case: UseCase, by_seed: dict, key: str) -> dict:
    """Units pooled over folds, averaged over seeds; the summary over units, the per-seed means
    and their spread, and each unit's headline value (for paired comparisons)."""
    per_unit: dict[str, list[dict]] = {}
    per_seed = {}
    for seed, runs in by_seed.items():
        merged = {u: v for r in runs for u, v in r["tests"][key].items()}
        per_seed[str(seed)] = summarise_units(merged, use_case.metric)["mean"]
        for unit, values in merged.items():
            per_unit.setdefault(unit_key(use_case, seed, unit), []).append(values)
    averaged = {u: _mean_values(vs) for u, vs in per_unit.items()}
    summary = summarise_units(averaged, use_case.metric)
    seeds = [v for v in per_seed.values() if v is not None]
    summary["seed_sd"] = float(np.std(seeds, ddof=1)) if len(seeds) > 1 else 0.0
    summary["per_seed"] = per_seed
    if key in PAIRED:
        summary["per_unit"] = {u: round(v[use_case.metric], 6) for u, v in averaged.items()}
    if use_case.unit != "task":
        summary["per_unit_metrics"] = averaged
    return summary


def _mean_values(values: list[dict]) -> dict:
    """The mean of each metric over a unit's seeds (None where a metric is undefined)."""
    out = {}
    for name in values[0]:
        defined = [v[name] for v in values if v.get(name) is not None]
        out[name] = float(np.mean(defined)) if defined else None
    return out
