"""The benchmark: every algorithm on the same use case, seeds, devices and new-device episodes.

What it runs, for each seed (and each fold of a cross-validated use case): every algorithm with
its settings tuned on validation devices (broker_service.sim.tuning), meta-trained for the use
case's rounds; TinyReptile, whose round trains one device where the others train K, twice: for
the same rounds (`tinyreptile`, equal rounds) and for K times the rounds
(`tinyreptile_equal_updates`, equal device updates). The learning curve is measured on the
validation devices, each point with the budget spent (rounds, device updates, fleet energy,
fleet bytes); the final figures only on the test devices, online (one pass, batch 1) and
multi-pass, for every shot count the use case reports, and for every model trained without a
split also with its head reset. Results are pooled per unit (task, speaker or day; a unit's
value is its mean over seeds) and confidence intervals are over units; the spread over seeds is
given beside them.

`criteria` states each of the paper's claims with the comparison it rests on. Jobs run in
parallel worker processes (one per core by default), all use cases and seeds in one pool.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from broker_service.core.fewshot import (
    MULTIPASS,
    ONLINE,
    episode_outputs,
    protocol_settings,
    summarise_units,
    unit_metrics,
)
from broker_service.core.hyperparams import COMMON, TUNED, USE_CASE_SETTINGS, settings_for
from broker_service.core.hyperparams import MULTIPASS as MULTIPASS_PASSES
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import ALGORITHMS
from broker_service.core.streams import CURVE_EPISODES, FINAL_EPISODES, named_stream
from broker_service.observe.tables import bench_rows, cost_rows, markdown_table, text_table
from broker_service.server import checkpoint
from broker_service.sim import simulation, tuning
from broker_service.sim.claims import EQUAL_UPDATES, claim_lines, criteria, paired_difference
from broker_service.sim.usecase_cache import cached_use_case, use_case_options
from broker_service.usecases.base import TEST, VALIDATION
from broker_service.usecases.registry import USE_CASES, use_case_class
from device_agent.energy import DEFAULT_PROFILE

ORDER = ["tinymetafed", "tinyreptile", "reptile", "fedavg", "no_federation"]
HEAD_RESET = "_head_reset"
REFUSALS = ("capped_rounds", "refused_updates", "refused_rounds", "downweighted")
"""What the service's bounds did to a run, recorded per algorithm and per seed."""
PAIRED = (ONLINE, MULTIPASS)
"""The test keys whose per-unit values the document keeps, for the paired comparisons."""
COUNTS = (
    "rounds",
    "updates",
    "macs_per_update",
    "model_bytes",
    "fleet_bytes_up",
    "fleet_bytes_down",
)


@dataclass(frozen=True)
class Entry:
    """One run of the bench: an algorithm, how many times the use case's rounds it gets, and
    settings it changes over the tuned ones (an ablation)."""

    name: str
    algorithm: str
    rounds_factor: int = 1
    overrides: tuple = ()


ABLATIONS = (
    Entry("tinymetafed_no_ef", "tinymetafed", overrides=(("error_feedback", False),)),
    Entry("tinymetafed_ef_decay", "tinymetafed", overrides=(("residual_decay", 0.9),)),
    Entry("tinymetafed_ef_reset", "tinymetafed", overrides=(("residual_max_away", 10),)),
)
"""TinyMetaFed's error-feedback ablations (`--ablations`): off; the residual decayed by 0.9 a
round away; the residual dropped after 10 or more rounds away. Same rounds and cohort as
TinyMetaFed, so equal rounds are equal device updates; the rates are TinyMetaFed's tuned ones."""


def sweep_parser(doc: str | None):
    """The command line every multi-seed benchmark script shares (`--use-cases`, `--seeds`,
    `--data-dir`, `--workers`), its description `doc`; each script adds its own options."""
    import argparse

    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--use-cases", default="sine,omniglot,kws,occupancy")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data-dir", default=os.environ.get("TINYMETAFED_DATA"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return parser


def entries(names: list[str], cohort: int, ablations: bool = False) -> list[Entry]:
    """The runs for the chosen algorithms: TinyReptile also at K times the rounds (K > 1), and
    with `ablations` TinyMetaFed's error-feedback variants (ABLATIONS) too."""
    out = []
    for name in names:
        out.append(Entry(name, name))
        if name == "tinyreptile" and cohort > 1:
            out.append(Entry(EQUAL_UPDATES, name, cohort))
        if name == "tinymetafed" and ablations:
            out.extend(ABLATIONS)
    return out


def episodes_for(use_case, settings: dict, seed: int, shots: int | None = None):
    """The fixed new-device episodes: the learning curve's on validation devices, the final
    figures' on test devices."""
    curve = use_case.new_device_episodes(
        int(settings["eval_devices"]), named_stream(seed, CURVE_EPISODES), VALIDATION
    )
    final = use_case.new_device_episodes(
        int(settings["final_devices"]), named_stream(seed, FINAL_EPISODES), TEST, shots
    )
    return curve, final


@dataclass(frozen=True)
class Job:
    """One entry on one seed and fold, with its full settings."""

    use_case: str
    data_dir: str | None
    seed: int
    fold: int
    entry: Entry
    settings: dict
    checkpoint: str | None = None  # the file to save the final model to
    verbose: bool = False


def check_overrides(overrides: dict) -> None:
    """ValueError for a bench override that is not a known protocol setting: a key of no use
    case's settings, or a tuned key (those come from the tuned files)."""
    known = set(COMMON).union(*(set(own) for own in USE_CASE_SETTINGS.values())) - {"quick"}
    for key in sorted(overrides):
        if key in TUNED:
            raise ValueError("%s is tuned per algorithm (benchmarks/tune.py), not set" % key)
        if key not in known:
            raise ValueError("unknown setting %r; known: %s" % (key, ", ".join(sorted(known))))


def run_job(job: Job) -> tuple[tuple, dict]:
    """Meta-train one entry, then measure it on the test devices; returns (key, summary)."""
    options = use_case_options(job.use_case, job.settings)
    use_case = cached_use_case(job.use_case, job.data_dir, job.seed, job.fold, options)
    curve_eps, _ = episodes_for(use_case, job.settings, job.seed)
    strategy = ALGORITHMS[job.entry.algorithm](job.settings)
    progress = None
    if job.verbose:
        prefix = "  %s seed %d fold %d " % (job.use_case, job.seed, job.fold)
        progress = lambda msg: print(prefix + msg, file=sys.stderr, flush=True)  # noqa: E731
    result = simulation.run(strategy, use_case, job.settings, job.seed, curve_eps, [], progress)
    summary = simulation.summarise(result, use_case)
    summary["tests"] = evaluate_on_test_devices(
        use_case, result.theta, strategy, job.settings, job.seed
    )
    if job.checkpoint:
        _save_checkpoint(job, use_case, result, strategy)
    return (job.use_case, job.seed, job.fold, job.entry.name), summary


def evaluate_on_test_devices(use_case, theta, strategy, settings: dict, seed: int) -> dict:
    """Per-unit test metrics of one model under every protocol: online and multi-pass, every
    shot count the use case reports, and for a model without a split also with its head reset.
    Keys: "online", "multipass", "online_head_reset", ..., "online_1shot", ..."""
    net = NumpyNet(use_case.spec)
    passes = MULTIPASS_PASSES[use_case.name]
    heads = [(False, "")] if strategy.split else [(False, ""), (True, HEAD_RESET)]
    out = {}
    for i, shots in enumerate(use_case.eval_shots):
        _, episodes = episodes_for(use_case, settings, seed, shots)
        shot_suffix = "" if i == 0 else "_%dshot" % shots
        for protocol in (ONLINE, MULTIPASS):
            s = protocol_settings(settings, protocol, passes)
            for reset, head_suffix in heads:
                outputs = episode_outputs(net, theta, strategy.split or reset, episodes, s)
                key = protocol + head_suffix + shot_suffix
                out[key] = unit_metrics(use_case.metric, episodes, outputs)
    return out


def _save_checkpoint(job: Job, use_case, result, strategy) -> None:
    ckpt = checkpoint.Checkpoint(
        spec=use_case.spec,
        theta=result.theta,
        round=len(result.per_round),
        algorithm=job.entry.algorithm,
        use_case=use_case.name,
        settings=job.settings,
        split=strategy.split,
        extra={"seed": job.seed, "fold": job.fold, "preprocessing": use_case.preprocessing},
        server_state=strategy.server_state(),
    )
    checkpoint.save(Path(job.checkpoint or ""), ckpt)


def checkpoint_file(folder: str, use_case: str, entry: str, seed_fold: tuple | None) -> str:
    """<use case>-<entry>.ckpt.json, with -seed<s>-fold<f> when the bench runs several."""
    name = "%s-%s" % (use_case, entry)
    if seed_fold is not None:
        name += "-seed%d-fold%d" % seed_fold
    return str(Path(folder) / ("%s.ckpt.json" % name))


def _one_blas_thread() -> None:
    """Workers use one BLAS thread each: two workers on two cores would otherwise fight over
    them (measured about 30 % slower, identical results)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def plan_jobs(
    use_case_name: str,
    data_dir: str | None,
    seeds: list[int],
    settings: dict,
    tuned: dict | None,
    names: list[str],
    checkpoint_dir: str | None = None,
    verbose: bool = False,
    ablations: bool = False,
) -> list[Job]:
    """Every (seed, fold, entry) job of one use case, each with its tuned settings (and an
    ablation's overrides over them)."""
    folds = use_case_class(use_case_name).FOLDS
    several = len(seeds) > 1 or folds > 1
    jobs = []
    for seed in seeds:
        for fold in range(folds):
            for entry in entries(names, int(settings["cohort"]), ablations):
                own = dict(settings, **tuning.tuned_overrides(tuned, entry.algorithm, fold))
                own.update(entry.overrides)
                own["rounds"] = int(settings["rounds"]) * entry.rounds_factor
                ckpt = None
                if checkpoint_dir:
                    where = (seed, fold) if several else None
                    ckpt = checkpoint_file(checkpoint_dir, use_case_name, entry.name, where)
                jobs.append(Job(use_case_name, data_dir, seed, fold, entry, own, ckpt, verbose))
    return jobs


JOB_WEIGHT = {"kws": 3.0, "omniglot": 3.0, "sine": 2.0, "occupancy": 0.3}
ENTRY_WEIGHT = {"no_federation": 0.1, "tinyreptile": 0.4}


def _longest_first(jobs: list[Job]) -> list[Job]:
    """Jobs ordered by a rough cost estimate, longest first, to balance the workers."""

    def cost(job: Job) -> float:
        weight = ENTRY_WEIGHT.get(job.entry.name, 1.0)
        return JOB_WEIGHT.get(job.use_case, 1.0) * weight

    return sorted(jobs, key=cost, reverse=True)


def run_jobs(jobs: list[Job], workers: int, verbose: bool) -> dict:
    """Run the jobs (in a pool when workers > 1); returns {key: summary}."""
    start = time.perf_counter()
    results = {}
    ordered = _longest_first(jobs)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, initializer=_one_blas_thread) as pool:
            for done, (key, summary) in enumerate(pool.map(run_job, ordered), 1):
                results[key] = summary
                _report(verbose, done, len(jobs), start, key, summary)
    else:
        for done, job in enumerate(ordered, 1):
            key, summary = run_job(job)
            results[key] = summary
            _report(verbose, done, len(jobs), start, key, summary)
    return results


def _report(verbose: bool, done: int, total: int, start: float, key: tuple, summary: dict):
    if verbose:
        print(
            "[%d/%d %.0f s] %s seed %d fold %d %s: %.1f s"
            % (done, total, time.perf_counter() - start, *key, summary["seconds"]),
            file=sys.stderr,
            flush=True,
        )


def run_benches(
    use_case_names: list[str],
    data_dir: str | None,
    seeds: list[int],
    rounds: int | None = None,
    quick: bool = False,
    algorithms: list[str] | None = None,
    checkpoint_dir: str | None = None,
    workers: int | None = None,
    verbose: bool = True,
    tuned_dir: str | None = None,
    board: str = DEFAULT_PROFILE,
    ablations: bool = False,
    overrides: dict | None = None,
) -> list[dict]:
    """Run the benchmark of several use cases and seeds in one pool; one document per use case.

    `tuned_dir` is the folder of the tuned-<use case>.json files (default benchmarks/results;
    "none" runs the untuned defaults); `ablations` adds TinyMetaFed's ABLATIONS; `overrides`
    replaces protocol settings (check_overrides) for every algorithm."""
    start = time.perf_counter()
    names = algorithms or ORDER
    plans = {}
    for name in use_case_names:
        settings = settings_for(name, quick=quick, rounds=rounds, **(overrides or {}))
        tuned = None if tuned_dir == "none" else tuning.load_tuned(name, tuned_dir)
        jobs = plan_jobs(
            name, data_dir, seeds, settings, tuned, names, checkpoint_dir, verbose, ablations
        )
        plans[name] = (settings, tuned, jobs)
    all_jobs = [job for _, _, jobs in plans.values() for job in jobs]
    workers = workers or min(len(all_jobs), os.cpu_count() or 1)
    results = run_jobs(all_jobs, workers, verbose)
    seconds = round(time.perf_counter() - start, 2)
    docs = []
    for name, (settings, tuned, jobs) in plans.items():
        use_case = cached_use_case(name, data_dir, seeds[0], 0, use_case_options(name, settings))
        mine = {key: results[key] for key in results if key[0] == name}
        docs.append(
            bench_document(use_case, seeds, settings, tuned, jobs, mine, quick, seconds, board)
        )
    return docs


def run_bench(
    use_case_name: str,
    data_dir: str | None,
    seed: int = 0,
    rounds: int | None = None,
    quick: bool = False,
    algorithms: list[str] | None = None,
    checkpoint_dir: str | None = None,
    workers: int | None = None,
    verbose: bool = True,
    seeds: list[int] | None = None,
    tuned_dir: str | None = None,
) -> dict:
    """Run the benchmark of one use case and return its JSON document."""
    return run_benches(
        [use_case_name],
        data_dir,
        seeds or [seed],
        rounds,
        quick,
        algorithms,
        checkpoint_dir,
        workers,
        verbose,
        tuned_dir,
    )[0]


def bench_document(use_case, seeds, settings, tuned, jobs, results, quick, seconds, board):
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
        if not entry.overrides or base is None:
            continue
        mine = doc["algorithms"][entry.name]
        out[entry.name] = {
            "overrides": dict(entry.overrides),
            "metric": mine["final_metric"],
            "baseline": base["final_metric"],
            "paired_vs_tinymetafed": paired_difference(doc, entry.name, "tinymetafed"),
            "updates": mine["updates"],
            "baseline_updates": base["updates"],
        }
    return out


def _seed_criteria(doc: dict, use_case, seed: int, results: dict):
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


def _split_summaries(use_case, jobs: list[Job]) -> list[dict]:
    folds = sorted({job.fold for job in jobs})
    seed = jobs[0].seed
    options = use_case_options(use_case.name, jobs[0].settings)
    return [
        cached_use_case(use_case.name, jobs[0].data_dir, seed, f, options).split_summary()
        for f in folds
    ]


def protocol_summary(use_case, settings: dict) -> dict:
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


def combine_entry(use_case, seeds, folds, name, results, settings) -> dict:
    """One entry's figures over seeds and folds: test metrics per unit (averaged over seeds) with
    CIs over units and the spread over seeds; costs and learning curves averaged over runs."""
    runs = [results[(use_case.name, s, f, name)] for s in seeds for f in folds]
    by_seed = {s: [results[(use_case.name, s, f, name)] for f in folds] for s in seeds}
    tests = {}
    for key in runs[0]["tests"]:
        tests[key] = _combine_test(use_case, by_seed, key)
    curve = _mean_curve([r["curve"] for r in runs])
    out: dict = {
        key: float(np.mean([r[key] for r in runs]))
        for key in (
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
    }
    out.update({key: int(round(out[key])) for key in COUNTS})
    # what the service's bounds did to the runs (core.bounds), summed over them: rounds whose
    # step the growth bound scaled down, updates refused, rounds whose step was refused,
    # updates device trust weighed down; an honest run refuses nothing
    for key in REFUSALS:
        out[key] = int(sum(r.get(key, 0) for r in runs))
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
            "per_seed": {
                str(s): {
                    "final_metric": tests[ONLINE]["per_seed"][str(s)],
                    "curve_std": float(np.mean([r["curve_std"] for r in by_seed[s]])),
                    "to_target_updates": _to_target_updates(use_case, by_seed[s]),
                    **{key: int(sum(r.get(key, 0) for r in by_seed[s])) for key in REFUSALS},
                }
                for s in seeds
            },
        }
    )
    out["rounds_to_target"] = out["to_target"]["round"] if out["to_target"] else None
    if all("staleness" in r for r in runs):
        out["staleness"] = _mean_tree([r["staleness"] for r in runs])
    return out


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


def _to_target_updates(use_case, runs: list[dict]):
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


def unit_key(use_case, seed: int, unit: str) -> str:
    """Tasks drawn per seed are distinct units; speakers and days are the same on every seed."""
    return ("s%d/%s" % (seed, unit)) if use_case.unit == "task" else unit


def _combine_test(use_case, by_seed: dict, key: str) -> dict:
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


def format_table(doc: dict) -> str:
    """The two tables of a bench document as fixed-width text, with the upload saving."""
    lines = [text_table(*bench_rows(doc)), "", text_table(*cost_rows(doc))]
    algos = doc["algorithms"]
    if "tinymetafed" in algos and "tinyreptile" in algos and algos["tinymetafed"]["updates"]:
        ratio = (
            algos["tinyreptile"]["bytes_up_per_update"]
            / algos["tinymetafed"]["bytes_up_per_update"]
        )
        lines.append("upload saving TinyReptile/TinyMetaFed: %.1fx" % ratio)
    for claim in doc.get("criteria", {}).values():
        lines.append("%s: %s" % (claim["claim"], claim["verdict"]))
    return "\n".join(lines)


def format_markdown(docs: list[dict]) -> str:
    """Markdown tables of several bench documents (one section per use case), each followed by
    its claims with the comparisons they rest on."""
    out = []
    for doc in docs:
        out.append(
            "### %s (%s, %d rounds, K = %d, seeds %s%s, %.0f s)\n"
            % (
                doc["use_case"],
                doc["metric"],
                doc["rounds"],
                doc["cohort"],
                ",".join(str(s) for s in doc["seeds"]),
                ", %d folds" % doc["folds"] if doc["folds"] > 1 else "",
                doc["seconds"],
            )
        )
        out.append(markdown_table(*bench_rows(doc)))
        out.append("")
        out.append(markdown_table(*cost_rows(doc)))
        out.append("")
        out.extend(claim_lines(doc))
        out.append("")
    return "\n".join(out)


def known_use_cases() -> list[str]:
    """The use cases the bench runs, in the docs' order."""
    return [u for u in ("sine", "omniglot", "kws", "occupancy") if u in USE_CASES]
