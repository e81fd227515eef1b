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

This module ties the steps together (`run_benches`) and is where the bench's names are imported
from; each step is a module of its own:

- bench_plan: the entries and jobs, their settings, the use cases and the sweep command line;
- bench_run: a job's meta-training and test measurement, and the worker pool;
- bench_pool: the jobs' summaries pooled over seeds, folds and units into a document;
- bench_format: a document as fixed-width text or Markdown.
"""

from __future__ import annotations

import os
import time

from broker_service.core.hyperparams import settings_for
from broker_service.core.nn import NumpyNet
from broker_service.sim import tuning
from broker_service.sim.bench_format import format_markdown, format_table
from broker_service.sim.bench_plan import (
    ABLATIONS,
    ORDER,
    Entry,
    Job,
    check_overrides,
    checkpoint_file,
    entries,
    job_settings,
    known_use_cases,
    plan_jobs,
    sweep_parser,
)
from broker_service.sim.bench_pool import (
    COUNTS,
    MEANS,
    PAIRED,
    REFUSALS,
    ablation_summary,
    bench_document,
    combine_entry,
    protocol_summary,
    unit_key,
)
from broker_service.sim.bench_run import (
    ENTRY_WEIGHT,
    HEAD_RESET,
    JOB_WEIGHT,
    _one_blas_thread,
    episodes_for,
    evaluate_on_test_devices,
    run_job,
    run_jobs,
)
from broker_service.sim.claims import EQUAL_UPDATES
from broker_service.sim.usecase_cache import cached_use_case, use_case_options
from device_agent.energy import DEFAULT_PROFILE

__all__ = [
    "ABLATIONS",
    "COUNTS",
    "ENTRY_WEIGHT",
    "EQUAL_UPDATES",
    "HEAD_RESET",
    "JOB_WEIGHT",
    "MEANS",
    "ORDER",
    "PAIRED",
    "REFUSALS",
    "Entry",
    "Job",
    "NumpyNet",
    "_one_blas_thread",
    "ablation_summary",
    "bench_document",
    "cached_use_case",
    "check_overrides",
    "checkpoint_file",
    "combine_entry",
    "entries",
    "episodes_for",
    "evaluate_on_test_devices",
    "format_markdown",
    "format_table",
    "job_settings",
    "known_use_cases",
    "plan_jobs",
    "protocol_summary",
    "run_bench",
    "run_benches",
    "run_job",
    "run_jobs",
    "sweep_parser",
    "unit_key",
    "use_case_options",
]
"""What other modules and the benchmark scripts import from here (the bench's public names,
wherever they are defined)."""


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
    extra: tuple = (),
) -> list[dict]:
    """Run the benchmark of several use cases and seeds in one pool; one document per use case.

    `tuned_dir` is the folder of the tuned-<use case>.json files (default benchmarks/results;
    "none" runs the untuned defaults); `ablations` adds TinyMetaFed's ABLATIONS; `overrides`
    replaces protocol settings (check_overrides) for every algorithm; `extra` adds entries of
    the caller's own (bench_plan.entries)."""
    start = time.perf_counter()
    names = algorithms or ORDER
    plans = {}
    for name in use_case_names:
        settings = settings_for(name, quick=quick, rounds=rounds, **(overrides or {}))
        tuned = None if tuned_dir == "none" else tuning.load_tuned(name, tuned_dir)
        jobs = plan_jobs(
            name, data_dir, seeds, settings, tuned, names, checkpoint_dir, verbose, ablations, extra
        )
        plans[name] = (settings, tuned, jobs)
    all_jobs = [job for _, _, jobs in plans.values() for job in jobs]
    workers = workers or min(len(all_jobs), os.cpu_count() or 1)
    results = run_jobs(all_jobs, workers, verbose)
    seconds = round(time.perf_counter() - start, 2)
    return [
        _document(name, plan, data_dir, seeds, results, quick, seconds, board)
        for name, plan in plans.items()
    ]


def _document(
    name: str,
    plan: tuple[dict, dict | None, list[Job]],
    data_dir: str | None,
    seeds: list[int],
    results: dict,
    quick: bool,
    seconds: float,
    board: str,
) -> dict:
    """One use case's document from its plan (settings, tuned file, jobs) and its jobs' results
    among `results`, every use case's."""
    settings, tuned, jobs = plan
    use_case = cached_use_case(name, data_dir, seeds[0], 0, use_case_options(name, settings))
    mine = {key: results[key] for key in results if key[0] == name}
    return bench_document(use_case, seeds, settings, tuned, jobs, mine, quick, seconds, board)


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
