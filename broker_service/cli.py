"""The `tinymetafed` command line: bench, evaluate and demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from broker_service import bench, bundle, checkpoint
from broker_service.fewshot import evaluate_on_episodes
from broker_service.hyperparams import settings_for
from broker_service.nn import NumpyNet
from broker_service.usecases.base import DataMissingError
from broker_service.usecases.registry import USE_CASES, load_use_case

DATA_ENV = "TINYMETAFED_DATA"


def _data_dir(args: argparse.Namespace) -> str | None:
    return args.data_dir or os.environ.get(DATA_ENV)


def _write_json(path: str | None, doc: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(doc, indent=1) + "\n")
        print("wrote %s" % path)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run every algorithm on one use case, print the table, write the JSON."""
    algos = args.algorithms.split(",") if args.algorithms else None
    doc = bench.run_bench(
        args.use_case,
        _data_dir(args),
        args.seed,
        args.rounds,
        args.quick,
        algos,
        args.checkpoint_dir,
        args.workers,
        verbose=not args.quiet,
    )
    print(bench.format_table(doc))
    print("took %.1f s" % doc["seconds"])
    _write_json(args.json, doc)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Measure a saved meta-initialisation on new devices exactly as the bench does."""
    ckpt = checkpoint.load(args.checkpoint)
    use_case_name = args.use_case or ckpt.use_case
    use_case = load_use_case(use_case_name, _data_dir(args), seed=args.seed)
    settings = {**settings_for(use_case_name), **ckpt.settings}
    n = args.devices or int(settings["final_devices"])
    episodes = use_case.new_device_episodes(n, np.random.default_rng([args.seed, 13]))
    values = evaluate_on_episodes(
        NumpyNet(ckpt.spec), ckpt.theta, ckpt.split, episodes, settings, use_case.metric
    )
    ci95 = 1.96 * float(values.std(ddof=1)) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    doc = {
        "checkpoint": str(args.checkpoint),
        "use_case": use_case_name,
        "algorithm": ckpt.algorithm,
        "round": ckpt.round,
        "metric": use_case.metric,
        "new_devices": len(values),
        "final_metric": float(values.mean()),
        "final_metric_ci95": ci95,
    }
    print(
        "%s on %d new %s devices: %s = %.4f ± %.4f (95%% CI)"
        % (ckpt.algorithm, len(values), use_case_name, use_case.metric, doc["final_metric"], ci95)
    )
    _write_json(args.json, doc)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded-default main job: the sine benchmark with checkpoints, no broker needed."""
    out = Path(args.out)
    doc = bench.run_bench(
        args.use_case,
        _data_dir(args),
        args.seed,
        args.rounds,
        args.quick,
        None,
        str(out / "checkpoints"),
        None,
        verbose=True,
    )
    print(bench.format_table(doc))
    _write_json(str(out / ("bench-%s.json" % args.use_case)), doc)
    print("checkpoints in %s" % (out / "checkpoints"))
    return 0


def cmd_device_bundle(args: argparse.Namespace) -> int:
    """Write what goes onto a board (sources or .mpy, main.py, boot.py, config.json)."""
    config = json.loads(Path(args.config).read_text()) if args.config else None
    files = bundle.write_bundle(Path(args.out), config, args.mpy, args.arch, args.plain)
    print("wrote %d files to %s" % (len(files), args.out))
    print("copy them onto the board, e.g.: mpremote connect PORT fs cp -r %s/* :" % args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="tinymetafed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("bench", help="compare all algorithms on one use case")
    _common(p)
    p.add_argument("--rounds", type=int, help="meta-training rounds (default: the use case's)")
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--json", help="write the results JSON here")
    p.add_argument("--algorithms", help="comma-separated subset, e.g. tinymetafed,tinyreptile")
    p.add_argument("--checkpoint-dir", help="save each algorithm's final model here")
    p.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no per-round progress")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("evaluate", help="measure a checkpoint on new devices")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--use-case", choices=sorted(USE_CASES))
    p.add_argument("--data-dir", help="folder holding the data sets (or $%s)" % DATA_ENV)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--devices", type=int, help="number of new devices (default: the bench's)")
    p.add_argument("--json", help="write the result JSON here")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("demo", help="run the main job on the embedded default (sine, no broker)")
    _common(p, default_use_case="sine")
    p.add_argument("--rounds", type=int)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="tinymetafed-out", help="output folder")
    p.set_defaults(func=cmd_demo)
    device = sub.add_parser("device", help="work with device boards").add_subparsers(
        dest="device_command", required=True)
    p = device.add_parser("bundle", help="write the files that go onto a board")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="the board's config JSON (default: the ESP32 example)")
    p.add_argument("--mpy", action="store_true", help="cross-compile to .mpy with mpy-cross")
    p.add_argument("--arch", help="board architecture for --mpy: %s" % ", ".join(bundle.ARCHES))
    p.add_argument("--plain", action="store_true",
                   help="strip @micropython.native (ports without the native emitter)")
    p.set_defaults(func=cmd_device_bundle)
    return parser


def _common(p: argparse.ArgumentParser, default_use_case: str | None = None) -> None:
    p.add_argument(
        "--use-case",
        choices=sorted(USE_CASES),
        default=default_use_case,
        required=default_use_case is None,
    )
    p.add_argument("--data-dir", help="folder holding the data sets (or $%s)" % DATA_ENV)
    p.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tinymetafed` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataMissingError, checkpoint.CheckpointError, bundle.BundleError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
