"""Settings chosen on validation devices: the one search every algorithm gets, and its results.

The search (benchmarks/tune.py runs it): the same `CANDIDATES` points of a Latin hypercube over
the log-uniform box `SEARCH`, drawn once with `SEARCH_SEED`, are tried for every algorithm of a
use case (and for every fold of a cross-validated use case), each meta-trained at the bench's
budget in device updates (TinyReptile for K times the rounds, as in the bench's equal-update
run) and scored on the validation devices only; the best score wins. An algorithm ignores the
keys it does not use (FedAvg's β is always 1; no federation only adapts), so every algorithm
gets the same number of candidates. Test devices are never touched.

The chosen settings are committed as benchmarks/results/tuned-<use case>.json and read by the
bench (`tuned_overrides`); without that file the bench runs the untuned defaults and says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from broker_service.core.hyperparams import TUNED

SEARCH = {"recon_lr": (0.01, 0.5), "adapt_lr": (0.001, 0.1), "outer_lr": (0.1, 1.0)}
"""The box searched: log-uniform bounds of each tuned key (core.hyperparams.TUNED)."""

CANDIDATES = 10
SEARCH_SEED = 0

USES = {
    "tinymetafed": TUNED,
    "tinyreptile": TUNED,
    "reptile": TUNED,
    "fedavg": ("recon_lr", "adapt_lr"),
    "no_federation": ("recon_lr", "adapt_lr"),
}
"""The tuned keys each algorithm uses (its new devices' adaptation uses both rates)."""

RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def candidates(n: int = CANDIDATES, seed: int = SEARCH_SEED) -> list[dict[str, float]]:
    """n points of a Latin hypercube in the log of the SEARCH box: each key's range is cut into
    n equal slices (in log scale) and every slice is used once, in a random pairing."""
    rng = np.random.default_rng([seed, 41])
    points: list[dict[str, float]] = [{} for _ in range(n)]
    for key in TUNED:
        lo, hi = (math.log(v) for v in SEARCH[key])
        slots = (rng.permutation(n) + rng.random(n)) / n
        for point, u in zip(points, slots, strict=True):
            point[key] = float(round(math.exp(lo + u * (hi - lo)), 5))
    return points


def score(values: np.ndarray, higher_is_better: bool) -> float:
    """A candidate's validation score, higher is better: the mean metric (negated for errors);
    a diverged run (non-finite) scores -inf."""
    mean = float(np.mean(values)) if len(values) else math.nan
    if not math.isfinite(mean):
        return -math.inf
    return mean if higher_is_better else -mean


def tuned_path(use_case: str, directory: str | Path | None = None) -> Path:
    """Where the tuned settings of a use case live."""
    return Path(directory or RESULTS_DIR) / ("tuned-%s.json" % use_case)


def load_tuned(use_case: str, directory: str | Path | None = None) -> dict | None:
    """The tuning document of a use case, or None when there is none."""
    path = tuned_path(use_case, directory)
    return json.loads(path.read_text()) if path.is_file() else None


def tuned_overrides(doc: dict | None, algorithm: str, fold: int = 0) -> dict[str, float]:
    """The chosen settings of `algorithm` (and fold) in a tuning document; {} without one."""
    if not doc:
        return {}
    for entry in doc["folds"]:
        if entry["fold"] == fold and algorithm in entry["algorithms"]:
            return dict(entry["algorithms"][algorithm]["chosen"])
    return {}


TUNING_SEED = 0
"""The seed of the tuning runs (their training streams and validation episodes)."""


def candidate_settings(base: dict, algorithm: str, point: dict[str, float]) -> dict:
    """The base settings with a candidate's values for the keys `algorithm` uses."""
    return dict(base, **{k: point[k] for k in USES[algorithm]})


def tuning_job(job: tuple) -> tuple[tuple, float, float]:
    """Meta-train one candidate (in a worker) and return (key, validation metric, seconds).

    `job` is (use case, data dir, fold, algorithm, candidate index, settings)."""
    import time

    from broker_service.core.fewshot import evaluate_on_episodes
    from broker_service.core.nn import NumpyNet
    from broker_service.core.strategies import ALGORITHMS
    from broker_service.core.streams import FINAL_EPISODES, named_stream
    from broker_service.sim import simulation
    from broker_service.sim.bench import cached_use_case
    from broker_service.usecases.base import VALIDATION

    name, data_dir, fold, algorithm, index, settings = job
    start = time.perf_counter()
    use_case = cached_use_case(name, data_dir, TUNING_SEED, fold)
    strategy = ALGORITHMS[algorithm](settings)
    result = simulation.run(strategy, use_case, settings, TUNING_SEED, [], [])
    episodes = use_case.new_device_episodes(
        int(settings["final_devices"]), named_stream(TUNING_SEED, FINAL_EPISODES), VALIDATION
    )
    values = evaluate_on_episodes(
        NumpyNet(use_case.spec), result.theta, strategy.split, episodes, settings, use_case.metric
    )
    mean = float(np.mean(values)) if np.all(np.isfinite(values)) else math.nan
    return (name, fold, algorithm, index), mean, time.perf_counter() - start


def plan_tuning(
    name: str, data_dir: str | None, base: dict, points: list[dict], folds: int
) -> list[tuple]:
    """Every (fold, algorithm, candidate) job of a use case; TinyReptile runs K times the
    rounds (the bench's equal-update budget), the curve is not measured (eval_every = rounds)."""
    jobs = []
    for fold in range(folds):
        for algorithm in USES:
            for index, point in enumerate(points):
                settings = candidate_settings(base, algorithm, point)
                if algorithm == "tinyreptile":
                    settings["rounds"] = int(base["rounds"]) * int(base["cohort"])
                settings["eval_every"] = int(settings["rounds"]) or 1
                jobs.append((name, data_dir, fold, algorithm, index, settings))
    return jobs


def tuning_document(
    name: str,
    base: dict,
    points: list[dict],
    results: dict,
    folds: list[dict],
    seconds: float,
    higher: bool,
) -> dict:
    """The tuned-<use case>.json document: the search, every candidate's validation metric,
    and each algorithm's choice per fold (`higher`: a higher metric is better)."""
    from broker_service.usecases.registry import use_case_class

    out_folds = []
    for fold, splits in enumerate(folds):
        algos = {}
        for algorithm in USES:
            tried = [
                {
                    "settings": {k: points[i][k] for k in USES[algorithm]},
                    "validation_metric": results[(name, fold, algorithm, i)],
                }
                for i in range(len(points))
            ]
            scores = [score(np.array([t["validation_metric"]]), higher) for t in tried]
            best = int(np.argmax(scores))
            algos[algorithm] = {
                "chosen": tried[best]["settings"],
                "validation_metric": tried[best]["validation_metric"],
                "candidates": tried,
            }
        out_folds.append({"fold": fold, "splits": splits, "algorithms": algos})
    return {
        "use_case": name,
        "seed": TUNING_SEED,
        "folds_total": use_case_class(name).FOLDS,
        "search": {
            "design": "Latin hypercube in log scale, the same points for every algorithm",
            "box": SEARCH,
            "candidates": len(points),
            "search_seed": SEARCH_SEED,
            "score": "mean metric on %d validation episodes, online protocol"
            % int(base["final_devices"]),
            "budget": "%d rounds (TinyReptile %d: the same device updates)"
            % (int(base["rounds"]), int(base["rounds"]) * int(base["cohort"])),
        },
        "rounds": int(base["rounds"]),
        "seconds": round(seconds, 1),
        "folds": out_folds,
    }
