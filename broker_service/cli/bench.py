"""`tinymetafed bench` and `tinymetafed evaluate`: the benchmark of every algorithm, and a saved
model measured on new devices the way the benchmark measures it.

The two live together because evaluate reads the checkpoints bench writes (--checkpoint-dir)
and must measure them with the bench's own rule, settings and new-device episodes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from broker_service.core.fewshot import ci95, evaluate_on_episodes
from broker_service.core.hyperparams import settings_for
from broker_service.core.nn import NumpyNet
from broker_service.core.streams import FINAL_EPISODES, named_stream
from broker_service.observe.provenance import load_average, provenance
from broker_service.server import checkpoint
from broker_service.server.config import ConfigError
from broker_service.sim import bench, learning
from broker_service.usecases.base import UseCase
from broker_service.usecases.registry import USE_CASES, load_use_case

from .common import DATA_ENV, Subcommands, add_command, data_dir, parse_setting, write_json


def add_bench(sub: Subcommands) -> None:
    """The parser of `tinymetafed bench`."""
    p = add_command(sub, "bench", cmd_bench, "compare all algorithms on one use case (or all)")
    p.add_argument("--use-case", choices=sorted(USE_CASES) + ["all"], required=True)
    p.add_argument("--data-dir", help="folder holding the data sets (or $%s)" % DATA_ENV)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", help="several seeds, e.g. 0,1,2 or 0-2 (overrides --seed)")
    p.add_argument("--rounds", type=int, help="meta-training rounds (default: the use case's)")
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--json", help="write the results JSON here (one use case)")
    p.add_argument("--json-dir", help="write bench-<use case>.json files here")
    p.add_argument("--algorithms", help="comma-separated subset, e.g. tinymetafed,tinyreptile")
    p.add_argument("--checkpoint-dir", help="save each algorithm's final model here")
    p.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    p.add_argument(
        "--tuned-dir",
        help="folder of tuned-<use case>.json (default benchmarks/results; 'none': defaults)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-round progress")
    p.add_argument(
        "--ablations",
        action="store_true",
        help="also run TinyMetaFed without error feedback",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a protocol setting for every algorithm (e.g. --set top_p=20)",
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """Run every algorithm on one use case (or all), on one seed or several, with the settings
    tuned on validation devices; print the tables and the paper's claims, write the JSON."""
    algos = _algorithms(args.algorithms)
    use_cases = bench.known_use_cases() if args.use_case == "all" else [args.use_case]
    if len(use_cases) > 1 and args.json:
        raise ConfigError("--json takes one use case; use --json-dir with --use-case all")
    seeds = _seed_list(args.seeds) if args.seeds else [args.seed]
    overrides = _overrides(args.set)
    started = load_average()
    docs = bench.run_benches(
        use_cases,
        data_dir(args),
        seeds,
        args.rounds,
        args.quick,
        algos,
        args.checkpoint_dir,
        args.workers,
        verbose=not args.quiet,
        tuned_dir=args.tuned_dir,
        ablations=args.ablations,
        overrides=overrides,
    )
    for doc in docs:
        doc["provenance"] = provenance(started)
        _print_bench(doc, several=len(docs) > 1)
    print("took %.1f s" % docs[0]["seconds"])
    _write_bench_json(args, docs)
    return 0


def _algorithms(text: str | None) -> list[str] | None:
    """The --algorithms subset (None: all of them); a ConfigError naming an unknown one."""
    algos = text.split(",") if text else None
    unknown = sorted(set(algos or ()) - set(bench.ORDER))
    if unknown:
        raise ConfigError(
            "--algorithms: unknown %s; known: %s" % (", ".join(unknown), ",".join(bench.ORDER))
        )
    return algos


def _seed_list(text: str) -> list[int]:
    """Seeds from "0,1,2" (or a range "0-2")."""
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return list(range(int(lo), int(hi) + 1))
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError("--seeds: %r is not a list like 0,1,2 or 0-2" % text) from None


def _overrides(settings: list[str] | None) -> dict:
    """The --set KEY=VALUE protocol settings, checked against what the bench lets one change."""
    overrides = dict(parse_setting(text) for text in settings or [])
    try:
        bench.check_overrides(overrides)
    except ValueError as exc:
        raise ConfigError("--set: %s" % exc) from None
    return overrides


def _print_bench(doc: dict, several: bool) -> None:
    """One use case's table, where its settings came from, and the algorithms that failed."""
    if several:
        print("\n== %s ==" % doc["use_case"])
    print(bench.format_table(doc))
    if not doc["tuned"]["from"]:
        print("settings: untuned defaults (no tuned-%s.json)" % doc["use_case"])
    for line in learning.failures(doc):
        print("warning: does not learn or refused honest updates: %s" % line)


def _write_bench_json(args: argparse.Namespace, docs: list[dict]) -> None:
    """The first document to --json, and every one to --json-dir/bench-<use case>.json."""
    write_json(args.json, docs[0])
    if args.json_dir:
        for doc in docs:
            write_json(str(Path(args.json_dir) / ("bench-%s.json" % doc["use_case"])), doc)


def add_evaluate(sub: Subcommands) -> None:
    """The parser of `tinymetafed evaluate`."""
    p = add_command(sub, "evaluate", cmd_evaluate, "measure a checkpoint on new devices")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--use-case", choices=sorted(USE_CASES))
    p.add_argument("--data-dir", help="folder holding the data sets (or $%s)" % DATA_ENV)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--devices", type=int, help="number of new devices (default: the bench's)")
    p.add_argument("--json", help="write the result JSON here")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Measure a saved meta-initialisation on new devices exactly as the bench does."""
    ckpt = checkpoint.load(args.checkpoint)
    use_case_name = args.use_case or ckpt.use_case
    if use_case_name not in USE_CASES:
        raise ConfigError(
            "%s is a %r model; pass --use-case (%s) to measure it on that use case's devices"
            % (args.checkpoint, use_case_name, ", ".join(sorted(USE_CASES)))
        )
    use_case = load_use_case(use_case_name, data_dir(args), seed=args.seed)
    settings = {**settings_for(use_case_name), **ckpt.settings}
    n = args.devices or int(settings["final_devices"])
    episodes = use_case.new_device_episodes(n, named_stream(args.seed, FINAL_EPISODES))
    values = evaluate_on_episodes(
        NumpyNet(ckpt.spec), ckpt.theta, ckpt.split, episodes, settings, use_case.metric
    )
    doc = _evaluation(args.checkpoint, ckpt, use_case_name, use_case, values)
    print(
        "%s on %d new %s devices: %s = %.4f ± %.4f (95%% CI)"
        % (
            ckpt.algorithm,
            len(values),
            use_case_name,
            use_case.metric,
            doc["final_metric"],
            doc["final_metric_ci95"],
        )
    )
    write_json(args.json, doc)
    return 0


def _evaluation(
    path: str,
    ckpt: checkpoint.Checkpoint,
    use_case_name: str,
    use_case: UseCase,
    values: np.ndarray,
) -> dict:
    """The evaluate result document: the model, where it was measured, its mean and 95 % CI."""
    return {
        "checkpoint": str(path),
        "use_case": use_case_name,
        "algorithm": ckpt.algorithm,
        "round": ckpt.round,
        "metric": use_case.metric,
        "new_devices": len(values),
        "final_metric": float(values.mean()),
        "final_metric_ci95": ci95(values),
    }
