"""Running the bench's jobs: meta-train one entry, measure it on the test devices, in a pool.

A job (broker_service.sim.bench_plan) is self-contained, so the jobs of every use case and seed
run in one pool of worker processes, longest first to keep the workers busy; each worker uses
one BLAS thread. A job's summary holds its learning curve, costs and per-unit test metrics; how
they are pooled over seeds, folds and units is broker_service.sim.bench_pool's concern.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from broker_service.core.fewshot import (
    MULTIPASS,
    ONLINE,
    episode_outputs,
    protocol_settings,
    unit_metrics,
)
from broker_service.core.hyperparams import MULTIPASS as MULTIPASS_PASSES
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import ALGORITHMS, Strategy
from broker_service.core.streams import CURVE_EPISODES, FINAL_EPISODES, named_stream
from broker_service.server import checkpoint
from broker_service.sim import buffered, simulation
from broker_service.sim.bench_plan import Job
from broker_service.sim.usecase_cache import cached_use_case, use_case_options
from broker_service.usecases.base import TEST, VALIDATION, UseCase

HEAD_RESET = "_head_reset"
"""The suffix of a test key measured with the head reset (a model trained without a split)."""
JOB_WEIGHT = {"kws": 3.0, "omniglot": 3.0, "sine": 2.0, "occupancy": 0.3}
"""A rough relative cost of one job per use case, to start the longest first."""
ENTRY_WEIGHT = {"no_federation": 0.1, "tinyreptile": 0.4}
"""A rough relative cost of one job per entry (1 when not listed)."""


def episodes_for(use_case: UseCase, settings: dict, seed: int, shots: int | None = None):
    """The fixed new-device episodes: the learning curve's on validation devices, the final
    figures' on test devices."""
    curve = use_case.new_device_episodes(
        int(settings["eval_devices"]), named_stream(seed, CURVE_EPISODES), VALIDATION
    )
    final = use_case.new_device_episodes(
        int(settings["final_devices"]), named_stream(seed, FINAL_EPISODES), TEST, shots
    )
    return curve, final


def run_job(job: Job) -> tuple[tuple, dict]:
    """Meta-train one entry, then measure it on the test devices; returns (key, summary)."""
    options = use_case_options(job.use_case, job.settings)
    use_case = cached_use_case(job.use_case, job.data_dir, job.seed, job.fold, options)
    curve_eps, _ = episodes_for(use_case, job.settings, job.seed)
    strategy = ALGORITHMS[job.entry.algorithm](job.settings)
    progress = _progress(job) if job.verbose else None
    if job.entry.schedule:
        result, extra = _run_async(job, strategy, use_case, curve_eps, progress)
    else:
        result = simulation.run(strategy, use_case, job.settings, job.seed, curve_eps, [], progress)
        extra = {}
    summary = simulation.summarise(result, use_case)
    summary.update(extra)
    summary["tests"] = evaluate_on_test_devices(
        use_case, result.theta, strategy, job.settings, job.seed
    )
    if job.checkpoint:
        _save_checkpoint(job, use_case, result, strategy)
    return (job.use_case, job.seed, job.fold, job.entry.name), summary


def _run_async(job: Job, strategy, use_case, curve_eps, progress) -> tuple:
    """An asynchronous entry's run (sim.buffered) and its own figures: the staleness of the
    updates admitted, those refused as too stale, wakes that found no new version, steps taken
    at their deadline, and the simulated hours."""
    schedule = buffered.AsyncSchedule(**dict(job.entry.schedule))
    run = buffered.run_async(
        strategy, use_case, job.settings, job.seed, curve_eps, [], schedule, progress
    )
    stale = np.array(run.staleness or [0])
    figures = {
        "mean": float(stale.mean()),
        "p90": float(np.percentile(stale, 90)),
        "max": int(stale.max()),
        "too_stale": run.too_stale,
        "idle_wakes": run.idle_wakes,
        "timeout_steps": run.timeout_steps,
        "simulated_hours": run.simulated_s / 3600.0,
    }
    return run.result, {"asynchronous": figures}


def _progress(job: Job) -> Callable[[str], None]:
    """A job's progress lines on stderr, each prefixed with its use case, seed and fold."""
    prefix = "  %s seed %d fold %d " % (job.use_case, job.seed, job.fold)
    return lambda msg: print(prefix + msg, file=sys.stderr, flush=True)


def evaluate_on_test_devices(
    use_case: UseCase, theta: np.ndarray, strategy: Strategy, settings: dict, seed: int
) -> dict:
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


def _save_checkpoint(job: Job, use_case: UseCase, result, strategy: Strategy) -> None:
    """Save a job's final model (with the state the server keeps) to its checkpoint file."""
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


def _one_blas_thread() -> None:
    """Workers use one BLAS thread each: two workers on two cores would otherwise fight over
    them (measured about 30 % slower, identical results)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


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


def _report(verbose: bool, done: int, total: int, start: float, key: tuple, summary: dict) -> None:
    """One line on stderr for a finished job: how far the pool is, and the job's own time."""
    if verbose:
        print(
            "[%d/%d %.0f s] %s seed %d fold %d %s: %.1f s"
            % (done, total, time.perf_counter() - start, *key, summary["seconds"]),
            file=sys.stderr,
            flush=True,
        )
