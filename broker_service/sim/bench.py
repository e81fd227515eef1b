"""The benchmark: every algorithm on the same use case, seeds, devices and new-device episodes.

Prints a comparison table and returns the JSON document described in the README. Algorithms run
in parallel worker processes (one per core by default).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from broker_service.core.hyperparams import settings_for
from broker_service.core.strategies import ALGORITHMS
from broker_service.core.streams import CURVE_EPISODES, FINAL_EPISODES, named_stream
from broker_service.observe.tables import bench_rows, markdown_table, text_table
from broker_service.server import checkpoint
from broker_service.sim import simulation
from broker_service.usecases.base import TEST, VALIDATION
from broker_service.usecases.registry import load_use_case

ORDER = ["tinymetafed", "tinyreptile", "reptile", "fedavg", "no_federation"]


def episodes_for(use_case, settings: dict, seed: int):
    """The fixed new-device episodes: the learning curve's on validation devices, the final
    figures' on test devices."""
    curve = use_case.new_device_episodes(
        int(settings["eval_devices"]), named_stream(seed, CURVE_EPISODES), VALIDATION
    )
    final = use_case.new_device_episodes(
        int(settings["final_devices"]), named_stream(seed, FINAL_EPISODES), TEST
    )
    return curve, final


def run_one(
    name: str,
    use_case_name: str,
    data_dir: str | None,
    seed: int,
    settings: dict,
    checkpoint_dir: str | None,
    verbose: bool,
) -> tuple[str, dict]:
    """Run one algorithm end to end (in a worker process) and return its summary."""
    use_case = load_use_case(use_case_name, data_dir, seed=seed)
    curve_eps, final_eps = episodes_for(use_case, settings, seed)
    strategy = ALGORITHMS[name](settings)
    progress = (lambda msg: print("  " + msg, file=sys.stderr, flush=True)) if verbose else None
    result = simulation.run(strategy, use_case, settings, seed, curve_eps, final_eps, progress)
    if checkpoint_dir:
        ckpt = checkpoint.Checkpoint(
            spec=use_case.spec,
            theta=result.theta,
            round=len(result.per_round),
            algorithm=name,
            use_case=use_case.name,
            settings=settings,
            split=strategy.split,
            extra={"seed": seed, "preprocessing": use_case.preprocessing},
        )
        checkpoint.save(Path(checkpoint_dir) / ("%s-%s.ckpt.json" % (use_case.name, name)), ckpt)
    return name, simulation.summarise(result, use_case)


def _one_blas_thread() -> None:
    """Workers use one BLAS thread each: two workers on two cores would otherwise fight over
    them (measured about 30 % slower, identical results)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


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
) -> dict:
    """Run the benchmark and return its JSON document."""
    settings = settings_for(use_case_name, quick=quick, rounds=rounds)
    names = algorithms or ORDER
    use_case = load_use_case(use_case_name, data_dir, seed=seed)
    start = time.perf_counter()
    workers = workers or min(len(names), os.cpu_count() or 1)
    jobs = [(n, use_case_name, data_dir, seed, settings, checkpoint_dir, verbose) for n in names]
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=_one_blas_thread) as pool:
            results = dict(pool.map(run_one, *zip(*jobs, strict=True)))
    else:
        results = dict(run_one(*job) for job in jobs)
    return {
        "use_case": use_case_name,
        "seed": seed,
        "rounds": int(settings["rounds"]),
        "metric": use_case.metric,
        "target": use_case.target,
        "quick": quick,
        "settings": settings,
        "board": "nrf52840",
        "seconds": round(time.perf_counter() - start, 2),
        "algorithms": {n: results[n] for n in names},
    }


def format_table(doc: dict) -> str:
    """The comparison table of a bench document as fixed-width text, with the upload saving."""
    lines = [text_table(*bench_rows(doc))]
    algos = doc["algorithms"]
    if "tinymetafed" in algos and "tinyreptile" in algos and algos["tinymetafed"]["updates"]:
        ratio = (
            algos["tinyreptile"]["bytes_up_per_update"]
            / algos["tinymetafed"]["bytes_up_per_update"]
        )
        lines.append("upload saving TinyReptile/TinyMetaFed: %.1fx" % ratio)
    return "\n".join(lines)


def criteria(doc: dict) -> dict:
    """The paper's claims checked on one bench document (ratios and pass/fail), for the docs."""
    a = doc["algorithms"]
    tmf, tr, nf = a["tinymetafed"], a["tinyreptile"], a["no_federation"]
    acc = doc["metric"] == "accuracy"

    def err(x):
        return 1.0 - x["final_metric"] if acc else x["final_metric"]

    vs_no_federation = err(tmf) / err(nf) if err(nf) > 0 else float("inf")
    return {
        "upload_ratio": tr["bytes_up_per_update"] / tmf["bytes_up_per_update"],
        "download_lower": tmf["bytes_down_per_update"] < tr["bytes_down_per_update"],
        "vs_tinyreptile": (tmf["final_metric"] - tr["final_metric"])
        if acc
        else tmf["final_metric"] / tr["final_metric"],
        "vs_tinyreptile_ok": (tmf["final_metric"] >= tr["final_metric"] - 0.02)
        if acc
        else tmf["final_metric"] <= 1.15 * tr["final_metric"],
        "error_vs_no_federation": vs_no_federation,
        "error_vs_no_federation_ok": vs_no_federation <= 0.5,
        "energy_ratio": tmf["energy_mj_per_update"] / tr["energy_mj_per_update"],
    }


def format_markdown(docs: list[dict]) -> str:
    """Markdown tables of several bench documents (one section per use case)."""
    out = []
    for doc in docs:
        c = criteria(doc)
        out.append(
            "### %s (%s, %d rounds, seed %d, %.0f s)\n"
            % (doc["use_case"], doc["metric"], doc["rounds"], doc["seed"], doc["seconds"])
        )
        out.append(markdown_table(*bench_rows(doc)))
        vs = (
            ("%+.3f accuracy" % c["vs_tinyreptile"])
            if doc["metric"] == "accuracy"
            else ("%.2f× MSE" % c["vs_tinyreptile"])
        )
        out.append(
            "\nUpload TinyReptile ÷ TinyMetaFed: %.1f×; download lower: %s; TinyMetaFed vs "
            "TinyReptile: %s (%s); TinyMetaFed error ÷ no-federation error: %.2f; energy "
            "TinyMetaFed ÷ TinyReptile: %.2f.\n"
            % (
                c["upload_ratio"],
                "yes" if c["download_lower"] else "no",
                vs,
                "within bound" if c["vs_tinyreptile_ok"] else "outside bound",
                c["error_vs_no_federation"],
                c["energy_ratio"],
            )
        )
    return "\n".join(out)
