"""Meta-training in simulation: one algorithm, a simulated fleet, rounds, and the learning curve.

Every algorithm sees the same devices, cohorts (for the same K), samples and new-device
episodes for a given seed. Bytes are the lengths of the real encoded payloads; device compute is
counted in multiply-accumulates and turned into energy with a board profile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from broker_service.core import fastcodec
from broker_service.core.aggregate import SparseUpdate
from broker_service.core.bounds import InfluenceBounds, sample_budget
from broker_service.core.cohort import sample_cohort
from broker_service.core.fewshot import evaluate_on_episodes
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import Strategy
from broker_service.usecases.base import Episode, UseCase
from device_agent import codec
from device_agent.energy import energy_mj, profile
from device_agent.model import init_params


@dataclass
class RunResult:
    """Everything measured while meta-training one algorithm."""

    algorithm: str
    theta: np.ndarray
    curve: list[tuple[int, float]]
    final: np.ndarray
    updates: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    macs: int = 0
    seconds: float = 0.0
    per_round: list[dict] = field(default_factory=list)
    refused_updates: int = 0
    refused_rounds: int = 0


def initial_theta(net: NumpyNet, seed: int) -> np.ndarray:
    """θ_0 drawn with the shared xorshift init (identical on every algorithm and on the agent)."""
    params = np.zeros(net.plan.n_params, dtype=np.float32)
    init_params(net.plan, params, seed)
    return params


def device_rng(seed: int, t: int, device_id: str) -> np.random.Generator:
    """The sample stream of a device in a round: the same for every algorithm."""
    return np.random.default_rng([seed, t, sum(device_id.encode()) * 131 + len(device_id)])


def run(
    strategy: Strategy,
    use_case: UseCase,
    settings: dict,
    seed: int,
    curve_episodes: list[Episode],
    final_episodes: list[Episode],
    progress: Callable[[str], None] | None = None,
    tamper: Callable[[str, SparseUpdate, int], SparseUpdate] | None = None,
    bounds: InfluenceBounds | None = None,
) -> RunResult:
    """Meta-train with `strategy` for settings['rounds'] rounds and measure it on new devices.

    `tamper(device, update, round)` lets an experiment replace what a device sends (poisoning).
    Every update passes the service's influence bounds (`bounds`, by default those of the
    settings, as the service builds them): refused when over the norm bound, samples clamped,
    clipped, and a step that would make θ non-finite is refused.
    """
    bounds = bounds if bounds is not None else InfluenceBounds.from_settings(settings)
    start = time.perf_counter()
    net = NumpyNet(use_case.spec)
    rounds = int(settings["rounds"]) if strategy.federated else 0
    theta = initial_theta(net, seed)[: strategy.global_size(net)]
    result = RunResult(strategy.name, theta, [], np.array([]))
    residuals: dict[str, np.ndarray] = {}
    every = max(1, int(settings["eval_every"]))
    if not strategy.federated:
        base = _curve_point(net, theta, strategy, curve_episodes, settings, use_case)
        result.curve = [(t, base) for t in range(0, int(settings["rounds"]) + 1, every)]
    else:
        result.curve.append(
            (0, _curve_point(net, theta, strategy, curve_episodes, settings, use_case))
        )
    for t in range(rounds):
        theta = _one_round(
            strategy, net, use_case, theta, t, rounds, seed, residuals, result, tamper, bounds
        )
        if (t + 1) % every == 0 or t + 1 == rounds:
            value = _curve_point(net, theta, strategy, curve_episodes, settings, use_case)
            result.curve.append((t + 1, value))
            if progress:
                progress(
                    "%s round %d/%d %s=%.4f"
                    % (strategy.name, t + 1, rounds, use_case.metric, value)
                )
    result.theta = theta
    result.final = evaluate_on_episodes(
        net, theta, strategy.split, final_episodes, settings, use_case.metric
    )
    result.seconds = time.perf_counter() - start
    return result


def _curve_point(net, theta, strategy, episodes, settings, use_case) -> float:
    values = evaluate_on_episodes(net, theta, strategy.split, episodes, settings, use_case.metric)
    return float(values.mean())


def round_cohort(devices: list[str], k: int, seed: int, t: int) -> list[str]:
    """Round t's cohort: the rule the service uses too (seeded by (seed, t, attempt 0))."""
    return sample_cohort(sorted(devices), k, np.random.default_rng([seed, t, 0]))


def _one_round(strategy, net, use_case, theta, t, rounds, seed, residuals, result, tamper, bounds):
    cohort = round_cohort(use_case.device_ids, strategy.cohort_size(), seed, t)
    command = strategy.round_command(t, version=t)
    down = len(codec.encode(codec.KIND_MODEL, len(theta), None, theta.tolist(), t, t))
    down += len(codec.encode_command(command, t, t))
    n = strategy.samples_per_update()
    budget = sample_budget(command)
    updates = []
    for device_id in cohort:
        xs, ys = use_case.stream(device_id, n, device_rng(seed, t, device_id))
        residual = residuals.setdefault(device_id, np.zeros(len(theta), dtype=np.float32))
        sim = strategy.local_update(net, theta, xs, ys, command, residual)
        header, idx, values = fastcodec.decode(sim.payload)
        update = SparseUpdate(idx, values, header.samples)
        kept = bounds.screen(tamper(device_id, update, t) if tamper else update, theta, budget)
        if kept is None:
            result.refused_updates += 1
        else:
            bounds.remember(kept)
            updates.append(kept)
        result.updates += 1
        result.bytes_up += len(sim.payload)
        result.bytes_down += down
        result.macs += sim.macs
    result.per_round.append({"round": t, "cohort": len(cohort)})
    stepped = bounds.step(strategy, theta, updates, t, rounds)
    if stepped is None:
        result.refused_rounds += 1
        return theta
    return stepped


def summarise(result: RunResult, use_case: UseCase, board: str = "nrf52840") -> dict:
    """The bench JSON entry of one algorithm (see README: benchmark)."""
    updates = max(result.updates, 1)
    up = result.bytes_up / updates
    down = result.bytes_down / updates
    macs = result.macs // updates
    final = result.final
    ci95 = 1.96 * float(final.std(ddof=1)) / np.sqrt(len(final)) if len(final) > 1 else 0.0
    values = [v for _, v in result.curve]
    tail = values[len(values) // 2 :]
    return {
        "final_metric": float(final.mean()),
        "final_metric_ci95": ci95,
        "rounds_to_target": rounds_to_target(
            result.curve, use_case.target, use_case.higher_is_better
        ),
        "bytes_up_per_update": up if result.updates else 0.0,
        "bytes_down_per_update": down if result.updates else 0.0,
        "energy_mj_per_update": energy_mj(macs, up, down, profile(board))
        if result.updates
        else 0.0,
        "macs_per_update": int(macs),
        "curve_std": float(np.std(tail)) if tail else 0.0,
        "curve": [[int(r), float(v)] for r, v in result.curve],
        "updates": result.updates,
        "seconds": round(result.seconds, 2),
    }


def rounds_to_target(curve: list[tuple[int, float]], target: float, higher_is_better: bool):
    """The first evaluated round whose metric reaches the target, or None."""
    for rnd, value in curve:
        if (value >= target) if higher_is_better else (value <= target):
            return int(rnd)
    return None
