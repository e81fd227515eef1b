"""The compressed downlink: TinyMetaFed with θ_g sent as float32, float16 or int8 (with a scale),
measured on validation devices, and the radio bytes per device update against TinyReptile's.

For each use case, seed and fold, TinyMetaFed is meta-trained three times with its tuned settings
(benchmarks/results/tuned-<use case>.json), once per `model_values`; the devices train on θ_g as
they decode it, the server keeps float32 (broker_service.sim.simulation). Each model is measured
on the validation devices (online protocol); per unit (task, speaker, day) the metric is averaged
over seeds, and f16 and int8 are compared with f32 by the paired difference over units with its
95 % CI. TinyReptile (dense float32 both ways, one device a round) is run once per seed and fold
for its radio bytes. Radio bytes per device update are MQTT packets on the device's link (update
PUBLISH up; command, SUBACK, model, UNSUBACK and the update's PUBACK down). The goal: TinyMetaFed
≥ 5× below TinyReptile on every use case.

    .venv/bin/python -m benchmarks.downlink_codec [--use-cases sine,omniglot,kws,occupancy]
        [--seeds 0,1,2] [--data-dir D] [--workers 2] [--quick]
        [--out benchmarks/results/downlink-codec.json]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from broker_service.core.fewshot import ci95, episode_outputs, unit_metrics
from broker_service.core.hyperparams import settings_for
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import ALGORITHMS
from broker_service.core.streams import FINAL_EPISODES, named_stream
from broker_service.observe.provenance import write_results
from broker_service.sim import simulation, tuning
from broker_service.sim.bench import _one_blas_thread, cached_use_case
from broker_service.usecases.base import VALIDATION
from broker_service.usecases.registry import use_case_class

ROOT = Path(__file__).resolve().parents[1]

ENCODINGS = ("f32", "f16", "int8")
GOAL = 5.0
"""TinyMetaFed's radio bytes per device update should be at least this many times below
TinyReptile's."""


def run_one(job: tuple) -> tuple[tuple, dict]:
    """Meta-train one (use case, seed, fold, algorithm, encoding) and measure it on the
    validation devices; returns (key, figures)."""
    name, data_dir, seed, fold, algorithm, values, settings = job
    _one_blas_thread()
    use_case = cached_use_case(name, data_dir, seed, fold)
    strategy = ALGORITHMS[algorithm](dict(settings, model_values=values))
    start = time.perf_counter()
    result = simulation.run(strategy, use_case, strategy.settings, seed, [], [])
    summary = simulation.summarise(result, use_case)
    episodes = use_case.new_device_episodes(
        int(settings["final_devices"]), named_stream(seed, FINAL_EPISODES), VALIDATION
    )
    net = NumpyNet(use_case.spec)
    outputs = episode_outputs(net, result.theta, strategy.split, episodes, strategy.settings)
    per_unit = unit_metrics(use_case.metric, episodes, outputs)
    figures = {
        key: summary[key]
        for key in (
            "bytes_up_per_update",
            "bytes_down_per_update",
            "radio_bytes_per_update",
            "model_bytes",
            "updates",
        )
    }
    figures["per_unit"] = {u: v[use_case.metric] for u, v in per_unit.items()}
    figures["metric"] = use_case.metric
    figures["higher_is_better"] = bool(use_case.higher_is_better)
    figures["seconds"] = round(time.perf_counter() - start, 2)
    return (name, seed, fold, algorithm, values), figures


def plan(use_cases: list[str], seeds: list[int], data_dir: str | None, quick: bool) -> list:
    """Every job: TinyMetaFed per encoding, TinyReptile in float32, per seed and fold."""
    jobs = []
    for name in use_cases:
        base = settings_for(name, quick=quick)
        tuned = tuning.load_tuned(name)
        for seed in seeds:
            for fold in range(use_case_class(name).FOLDS):
                for algorithm, encodings in (("tinymetafed", ENCODINGS), ("tinyreptile", ("f32",))):
                    own = dict(base, **tuning.tuned_overrides(tuned, algorithm, fold))
                    for values in encodings:
                        jobs.append((name, data_dir, seed, fold, algorithm, values, own))
    return jobs


def _units(results: dict, name: str, seeds: list[int], folds: int, values: str) -> dict:
    """Per unit: the metric averaged over seeds (units of every fold pooled)."""
    pooled: dict[str, list[float]] = {}
    for seed in seeds:
        for fold in range(folds):
            for unit, v in results[(name, seed, fold, "tinymetafed", values)]["per_unit"].items():
                pooled.setdefault("%d/%s" % (fold, unit), []).append(v)
    return {u: float(np.mean(v)) for u, v in pooled.items()}


def summarise(results: dict, name: str, seeds: list[int]) -> dict:
    """One use case's figures: per encoding the metric, its paired difference with f32, the
    bytes; TinyReptile's bytes; the radio-byte ratio against the goal."""
    folds = use_case_class(name).FOLDS
    keys = [(s, f) for s in seeds for f in range(folds)]
    tr = [results[(name, s, f, "tinyreptile", "f32")] for s, f in keys]
    tr_radio = float(np.mean([r["radio_bytes_per_update"] for r in tr]))
    base = _units(results, name, seeds, folds, "f32")
    out: dict = {
        "tinyreptile": {
            "radio_bytes_per_update": tr_radio,
            "bytes_up_per_update": float(np.mean([r["bytes_up_per_update"] for r in tr])),
            "bytes_down_per_update": float(np.mean([r["bytes_down_per_update"] for r in tr])),
        },
        "encodings": {},
    }
    for values in ENCODINGS:
        runs = [results[(name, s, f, "tinymetafed", values)] for s, f in keys]
        units = _units(results, name, seeds, folds, values)
        common = [u for u in units if u in base]
        sign = 1.0 if runs[0]["higher_is_better"] else -1.0
        diffs = np.array([sign * (units[u] - base[u]) for u in common])
        radio = float(np.mean([r["radio_bytes_per_update"] for r in runs]))
        vals = np.array(list(units.values()))
        out["encodings"][values] = {
            "metric_mean": float(vals.mean()),
            "metric_ci95": ci95(vals),
            "difference_vs_f32": float(diffs.mean()),
            "difference_ci95": ci95(diffs),
            "within_f32_ci": bool(abs(diffs.mean()) <= ci95(diffs)) if values != "f32" else True,
            "units": len(common),
            "model_bytes": runs[0]["model_bytes"],
            "bytes_up_per_update": float(np.mean([r["bytes_up_per_update"] for r in runs])),
            "bytes_down_per_update": float(np.mean([r["bytes_down_per_update"] for r in runs])),
            "radio_bytes_per_update": radio,
            "radio_ratio_vs_tinyreptile": tr_radio / radio,
            "goal_met": tr_radio / radio >= GOAL,
        }
    out["metric"] = tr[0]["metric"]
    out["difference_sign"] = "positive: better than f32 (an error metric negated)"
    return out


def markdown(doc: dict) -> str:
    """The docs table: per use case and encoding the validation metric, its paired difference
    with f32, the bytes per device update and the radio ratio against TinyReptile's."""
    lines = [
        "| use case | θ_g sent as | model B | metric (validation) | vs f32 (paired, CI95) "
        "| up B | down B | radio B (MQTT) | TinyReptile radio B | ratio | goal ≥ %g× |"
        % doc["goal_ratio"],
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in doc["use_cases"].items():
        tr = s["tinyreptile"]["radio_bytes_per_update"]
        for values, e in s["encodings"].items():
            diff = (
                "—"
                if values == "f32"
                else "%+.4f ± %.4f%s"
                % (
                    e["difference_vs_f32"],
                    e["difference_ci95"],
                    "" if e["within_f32_ci"] else " (outside)",
                )
            )
            ratio = e["radio_ratio_vs_tinyreptile"]
            goal = "met" if e["goal_met"] else "%.2f× short" % (doc["goal_ratio"] / ratio)
            lines.append(
                "| %s (%s) | %s | %d | %.4f ± %.4f | %s | %.0f | %.0f | %.0f | %.0f | %.2f× | %s |"
                % (
                    name,
                    s["metric"],
                    values,
                    e["model_bytes"],
                    e["metric_mean"],
                    e["metric_ci95"],
                    diff,
                    e["bytes_up_per_update"],
                    e["bytes_down_per_update"],
                    e["radio_bytes_per_update"],
                    tr,
                    ratio,
                    goal,
                )
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the study, print a table and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--use-cases", default="sine,omniglot,kws,occupancy")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/downlink-codec.json"))
    p.add_argument("--table", help="print the docs table of this JSON and stop")
    args = p.parse_args(argv)
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return 0
    names = args.use_cases.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = plan(names, seeds, args.data_dir, args.quick)
    start = time.perf_counter()
    results = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for key, figures in pool.map(run_one, jobs):
            results[key] = figures
            print("%s %.1fs" % (" ".join(map(str, key)), figures["seconds"]), flush=True)
    doc = {
        "seeds": seeds,
        "quick": args.quick,
        "goal_ratio": GOAL,
        "protocol": "validation devices, online adaptation; TinyMetaFed tuned settings",
        "seconds": round(time.perf_counter() - start, 1),
        "use_cases": {name: summarise(results, name, seeds) for name in names},
    }
    for name, s in doc["use_cases"].items():
        tr = s["tinyreptile"]["radio_bytes_per_update"]
        for values, e in s["encodings"].items():
            print(
                "%-9s %-4s metric %.4f ± %.4f  diff vs f32 %+.4f ± %.4f  radio %6.0f B "
                "(TinyReptile %6.0f B, %.2fx, goal %s)"
                % (
                    name,
                    values,
                    e["metric_mean"],
                    e["metric_ci95"],
                    e["difference_vs_f32"],
                    e["difference_ci95"],
                    e["radio_bytes_per_update"],
                    tr,
                    e["radio_ratio_vs_tinyreptile"],
                    "met" if e["goal_met"] else "not met",
                )
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, doc)
    print(markdown(doc))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
