"""Settings chosen on validation devices: the one search every algorithm gets, and its results.

The search (benchmarks/tune.py runs it), in two stages with the same budget for every algorithm
of a use case (and every fold of a cross-validated use case):
1. the same `CANDIDATES` points of a Latin hypercube over the log-uniform box `SEARCH`, drawn
   once with `SEARCH_SEED`, for every algorithm;
2. `REFINE` more points, a Latin hypercube in the box `REFINE_FACTOR` times narrower on each
   side around the algorithm's best point of stage 1 (clipped to `SEARCH`).
Each candidate is meta-trained at the bench's budget in device updates (TinyReptile for K times
the rounds, as in the bench's equal-update run) and scored on the validation devices only; the
best score of both stages wins. An algorithm ignores the keys it does not use (FedAvg's β is
always 1; no federation only adapts), so every algorithm gets the same number of candidates.
Test devices are never touched.

The chosen settings are committed as benchmarks/results/tuned-<use case>.json and read by the
bench (`tuned_overrides`); without that file the bench runs the untuned defaults and says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from broker_service.core.hyperparams import TUNED

SEARCH = {"recon_lr": (0.01, 0.5), "adapt_lr": (0.0003, 0.1), "outer_lr": (0.1, 3.0)}
"""The box searched: log-uniform bounds of each tuned key (core.hyperparams.TUNED). Widened
once where earlier choices sat on an edge: β_0 from [0.1, 1] (TinyMetaFed chose 0.85-0.88 of
it) and adapt_lr from [0.001, 0.1] (TinyReptile chose 0.0012 on kws)."""
EDGE = 0.05
"""A chosen value within this share of its key's log range from a bound of SEARCH is reported
as on the edge (`on_edge` in the tuning document): the box may have cut the search short."""

CANDIDATES = 10
REFINE = 5
REFINE_FACTOR = 2.5
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
    return _hypercube({k: SEARCH[k] for k in TUNED}, n, np.random.default_rng([seed, 41]))


def refinements(
    best: dict[str, float], algorithm: str, n: int = REFINE, seed: int = SEARCH_SEED
) -> list[dict[str, float]]:
    """Stage 2: n Latin-hypercube points around `best` for the keys `algorithm` uses, each in
    [best / REFINE_FACTOR, best · REFINE_FACTOR] clipped to SEARCH; other keys as in `best`."""
    box = {
        k: (max(SEARCH[k][0], best[k] / REFINE_FACTOR), min(SEARCH[k][1], best[k] * REFINE_FACTOR))
        for k in USES[algorithm]
    }
    points = _hypercube(box, n, np.random.default_rng([seed, 43]))
    return [dict(best, **point) for point in points]


def box_candidates(box: dict[str, tuple[float, float]], n: int, salt: int) -> list[dict]:
    """n Latin-hypercube points in the log of `box` (the same design as `candidates`, for a
    search over other keys, e.g. one server optimiser's step size); `salt` picks the draw."""
    return _hypercube(box, n, np.random.default_rng([SEARCH_SEED, salt]))


def _hypercube(box: dict, n: int, rng: np.random.Generator) -> list[dict[str, float]]:
    points: list[dict[str, float]] = [{} for _ in range(n)]
    for key, bounds in box.items():
        lo, hi = (math.log(v) for v in bounds)
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
    from broker_service.sim.usecase_cache import cached_use_case, use_case_options
    from broker_service.usecases.base import VALIDATION

    name, data_dir, fold, algorithm, index, settings = job
    start = time.perf_counter()
    options = use_case_options(name, settings)
    use_case = cached_use_case(name, data_dir, TUNING_SEED, fold, options)
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
    name: str, data_dir: str | None, base: dict, tried: dict[tuple, list[dict]]
) -> list[tuple]:
    """The jobs of the candidates `tried[(fold, algorithm)]` not yet measured (those without a
    "validation_metric"); TinyReptile runs K times the rounds (the bench's equal-update
    budget), the curve is not measured (eval_every = rounds)."""
    jobs = []
    for (fold, algorithm), points in tried.items():
        for index, point in enumerate(points):
            if "validation_metric" in point:
                continue
            settings = candidate_settings(base, algorithm, point["settings"])
            if algorithm == "tinyreptile":
                settings["rounds"] = int(base["rounds"]) * int(base["cohort"])
            settings["eval_every"] = int(settings["rounds"]) or 1
            jobs.append((name, data_dir, fold, algorithm, index, settings))
    return jobs


def stage_one(folds: int, n: int = CANDIDATES) -> dict[tuple, list[dict]]:
    """The stage-1 candidates of every (fold, algorithm): the shared hypercube."""
    points = candidates(n)
    return {
        (fold, algorithm): [{"stage": 1, "settings": dict(p)} for p in points]
        for fold in range(folds)
        for algorithm in USES
    }


def best_of(points: list[dict], higher: bool) -> dict:
    """The measured candidate with the best validation score."""
    measured = [p for p in points if "validation_metric" in p]
    scores = [score(np.array([p["validation_metric"]]), higher) for p in measured]
    return measured[int(np.argmax(scores))]


def add_stage_two(tried: dict[tuple, list[dict]], higher: bool, n: int = REFINE) -> None:
    """Append each (fold, algorithm)'s stage-2 candidates around its stage-1 best."""
    for (_, algorithm), points in tried.items():
        if any(p["stage"] == 2 for p in points):
            continue
        best = best_of(points, higher)["settings"]
        points += [{"stage": 2, "settings": p} for p in refinements(best, algorithm, n)]


def on_edge(chosen: dict[str, float]) -> dict[str, str]:
    """The chosen values that sit within EDGE of a bound of SEARCH (in log scale), each as
    "low" or "high": {} when every value is inside the box."""
    out = {}
    for key, value in chosen.items():
        lo, hi = (math.log(v) for v in SEARCH[key])
        where = (math.log(value) - lo) / (hi - lo)
        if where <= EDGE:
            out[key] = "low"
        elif where >= 1 - EDGE:
            out[key] = "high"
    return out


def tuning_document(
    name: str,
    base: dict,
    tried: dict[tuple, list[dict]],
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
            points = [
                dict(p, settings={k: p["settings"][k] for k in USES[algorithm]})
                for p in tried[(fold, algorithm)]
            ]
            best = best_of(points, higher)
            algos[algorithm] = {
                "chosen": best["settings"],
                "validation_metric": best["validation_metric"],
                "on_edge": on_edge(best["settings"]),
                "candidates": points,
            }
        out_folds.append({"fold": fold, "splits": splits, "algorithms": algos})
    return {
        "use_case": name,
        "seed": TUNING_SEED,
        "folds_total": use_case_class(name).FOLDS,
        "search": {
            "design": "stage 1: Latin hypercube in log scale, the same points for every "
            "algorithm; stage 2: a Latin hypercube %g times narrower each side around each "
            "algorithm's stage-1 best" % REFINE_FACTOR,
            "box": SEARCH,
            "candidates": CANDIDATES,
            "refinements": REFINE,
            "search_seed": SEARCH_SEED,
            "score": "mean metric on %d validation episodes, online protocol"
            % int(base["final_devices"]),
            "budget": "%d rounds (TinyReptile %d: the same device updates)"
            % (int(base["rounds"]), int(base["rounds"]) * int(base["cohort"])),
        },
        "rounds": int(base["rounds"]),
        "seconds": round(seconds, 1),
        "folds": out_folds,
        "runs": [],
    }


def resume(doc: dict | None, tried: dict[tuple, list[dict]]) -> int:
    """Copy the validation metrics of an earlier tuning document into `tried` where its
    candidate (stage and settings) is the same; returns how many were reused."""
    box = doc.get("search", {}).get("box") if doc else None
    if json.loads(json.dumps(box)) != json.loads(json.dumps(SEARCH)):
        return 0
    reused = 0
    for entry in doc["folds"]:
        for algorithm, result in entry["algorithms"].items():
            old = {
                (c.get("stage", 1), json.dumps(c["settings"], sort_keys=True)): c
                for c in result["candidates"]
            }
            for point in tried.get((entry["fold"], algorithm), []):
                mine = {k: point["settings"][k] for k in USES[algorithm]}
                match = old.get((point["stage"], json.dumps(mine, sort_keys=True)))
                if match is not None and "validation_metric" not in point:
                    point["validation_metric"] = match["validation_metric"]
                    reused += 1
    return reused
