"""Meta-training in simulation: one algorithm, a simulated fleet, rounds, and the learning curve.

Every algorithm sees the same devices, cohorts (for the same K), samples and new-device
episodes for a given seed. Bytes are the lengths of the real encoded payloads; device compute is
counted in multiply-accumulates and turned into energy with a board profile.

Fleet costs count what the broker really sends: the model is a retained message on the fleet's
topic (docs/protocol.md), so every online device of the fleet receives every round's model,
not only the cohort; each cohort device also receives its command and sends its update. A
device outside the cohort spends `energy_mj(0, 0, model_bytes, board)` a round receiving the
model. Every device of the use case's training fleet is counted as online.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from broker_service.core import fastcodec
from broker_service.core.aggregate import SparseUpdate
from broker_service.core.bounds import InfluenceBounds, sample_budget
from broker_service.core.cohort import round_cohort
from broker_service.core.fewshot import evaluate_on_episodes
from broker_service.core.initialisation import initial_theta
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import Strategy
from broker_service.core.streams import device_stream
from broker_service.sim.clients import local_update
from broker_service.usecases.base import Episode, UseCase
from device_agent import codec
from device_agent.energy import DEFAULT_PROFILE, energy_mj, profile


class Tamper(Protocol):
    """What an experiment puts between a device and the service (sim.attacks.Attacker)."""

    def __call__(self, device: str, update: SparseUpdate, t: int) -> SparseUpdate: ...

    def identity(self, device: str, t: int) -> str:
        """The device id the service sees in round t."""
        ...


@dataclass
class RunResult:
    """Everything measured while meta-training one algorithm.

    `bytes_up` / `bytes_down` / `macs` / `device_energy_mj` are the cohort devices' (per device
    update); `fleet_bytes_down` and `fleet_energy_mj` add every non-cohort online device's copy
    of the model. `budget[i]` is the cost spent when `curve[i]` was measured.
    """

    algorithm: str
    theta: np.ndarray
    curve: list[tuple[int, float]]
    final: np.ndarray
    updates: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    macs: int = 0
    device_energy_mj: float = 0.0
    fleet_bytes_down: int = 0
    fleet_energy_mj: float = 0.0
    model_bytes: int = 0
    seconds: float = 0.0
    per_round: list[dict] = field(default_factory=list)
    budget: list[dict] = field(default_factory=list)
    refused_updates: int = 0
    refused_rounds: int = 0
    downweighted: int = 0

    def spent(self, rnd: int) -> dict:
        """The budget spent by the end of round `rnd`: rounds, device updates, fleet energy
        (mJ) and fleet bytes (up + down)."""
        return {
            "round": int(rnd),
            "updates": self.updates,
            "fleet_energy_mj": float(self.fleet_energy_mj),
            "fleet_bytes": int(self.bytes_up + self.fleet_bytes_down),
        }


def device_rng(seed: int, t: int, device_id: str) -> np.random.Generator:
    """The sample stream of a device in a round: the same for every algorithm
    (broker_service.core.streams.device_stream)."""
    return device_stream(seed, t, device_id)


def model_payload_bytes(n: int) -> int:
    """Length of the MODEL payload of a θ of n float32 values (dense: independent of values)."""
    return len(codec.encode(codec.KIND_MODEL, n, None, [0.0] * n, 0, 0))


def run(
    strategy: Strategy,
    use_case: UseCase,
    settings: dict,
    seed: int,
    curve_episodes: list[Episode],
    final_episodes: list[Episode],
    progress: Callable[[str], None] | None = None,
    tamper: Tamper | None = None,
    board: str = DEFAULT_PROFILE,
    bounds: InfluenceBounds | None = None,
) -> RunResult:
    """Meta-train with `strategy` for settings['rounds'] rounds, measuring the learning curve on
    `curve_episodes` every `eval_every` rounds, then the metric on `final_episodes`.

    `tamper(device, update, round)` lets an experiment replace what a device sends (poisoning),
    and `tamper.identity(device, round)` the device id the service sees (a re-enrolled device).
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
    result.model_bytes = model_payload_bytes(len(theta)) if strategy.federated else 0
    fleet = Fleet(use_case.device_ids, result.model_bytes, profile(board))
    residuals: dict[str, np.ndarray] = {}
    every = max(1, int(settings["eval_every"]))
    first = _curve_point(net, theta, strategy, curve_episodes, settings, use_case)
    if not strategy.federated:
        result.curve = [(t, first) for t in range(0, int(settings["rounds"]) + 1, every)]
        result.budget = [result.spent(t) for t, _ in result.curve]
    else:
        result.curve.append((0, first))
        result.budget.append(result.spent(0))
    for t in range(rounds):
        theta = _one_round(
            strategy,
            net,
            use_case,
            theta,
            (t, rounds, seed),
            residuals,
            result,
            fleet,
            tamper,
            bounds,
        )
        if (t + 1) % every == 0 or t + 1 == rounds:
            value = _curve_point(net, theta, strategy, curve_episodes, settings, use_case)
            result.curve.append((t + 1, value))
            result.budget.append(result.spent(t + 1))
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


class Fleet:
    """The online fleet's side of a round: who receives the retained model, and what the devices
    outside the cohort spend receiving it."""

    def __init__(self, device_ids: list[str], model_bytes: int, board: dict):
        self.size = len(device_ids)
        self.model_bytes = model_bytes
        self.board = board
        self.idle_mj = energy_mj(0, 0, model_bytes, board) if model_bytes else 0.0

    def idle(self, cohort: int) -> tuple[int, float]:
        """(bytes, mJ) received by the online devices outside a cohort of `cohort` devices."""
        others = max(0, self.size - cohort)
        return others * self.model_bytes, others * self.idle_mj


def _curve_point(net, theta, strategy, episodes, settings, use_case) -> float:
    if not episodes:
        return float("nan")
    values = evaluate_on_episodes(net, theta, strategy.split, episodes, settings, use_case.metric)
    return float(values.mean())


def _one_round(strategy, net, use_case, theta, when, residuals, result, fleet, tamper, bounds):
    """One round: the cohort trains, its updates pass the service's influence bounds, the
    broker's traffic and the devices' energy are counted, the strategy aggregates. `when` is
    (round, total rounds, seed)."""
    t, rounds, seed = when
    cohort = round_cohort(use_case.device_ids, strategy.cohort_size(), seed, t)
    command = strategy.round_command(t, version=t)
    down = fleet.model_bytes + len(codec.encode_command(command, t, t))
    n = strategy.samples_per_update()
    budget = sample_budget(command)
    updates = []
    senders = []
    spent_mj = 0.0
    for device_id in cohort:
        xs, ys = use_case.stream(device_id, n, device_rng(seed, t, device_id))
        residual = residuals.setdefault(device_id, np.zeros(len(theta), dtype=np.float32))
        sim = local_update(strategy, net, theta, xs, ys, command, residual)
        header, idx, values = fastcodec.decode(sim.payload)
        update = SparseUpdate(idx, values, header.samples)
        kept = bounds.screen(tamper(device_id, update, t) if tamper else update, theta, budget)
        if kept is None:
            result.refused_updates += 1
        else:
            bounds.remember(kept)
            updates.append(kept)
            senders.append(tamper.identity(device_id, t) if tamper else device_id)
        energy = energy_mj(sim.macs, len(sim.payload), down, fleet.board)
        result.updates += 1
        result.bytes_up += len(sim.payload)
        result.bytes_down += down
        result.macs += sim.macs
        spent_mj += energy
    idle_bytes, idle_mj = fleet.idle(len(cohort))
    result.device_energy_mj += spent_mj
    result.fleet_bytes_down += len(cohort) * down + idle_bytes
    result.fleet_energy_mj += spent_mj + idle_mj
    result.per_round.append({"round": t, "cohort": len(cohort)})
    stepped = bounds.step(strategy, theta, updates, t, rounds, senders)
    result.downweighted += len(bounds.trust.downweighted)
    if stepped is None:
        result.refused_rounds += 1
        return theta
    return stepped


def summarise(result: RunResult, use_case: UseCase) -> dict:
    """The per-run figures of one algorithm: per device update, fleet totals, the learning curve
    (each point with the budget spent), and the first point reaching the target."""
    n = max(result.updates, 1)
    values = [v for _, v in result.curve]
    tail = values[len(values) // 2 :]
    points = [
        {**b, "metric": float(v)} for b, (_, v) in zip(result.budget, result.curve, strict=True)
    ]
    return {
        "rounds": len(result.per_round),
        "updates": result.updates,
        "bytes_up_per_update": result.bytes_up / n,
        "bytes_down_per_update": result.bytes_down / n,
        "energy_mj_per_update": result.device_energy_mj / n,
        "macs_per_update": result.macs // n,
        "model_bytes": result.model_bytes,
        "fleet_bytes_up": result.bytes_up,
        "fleet_bytes_down": result.fleet_bytes_down,
        "fleet_energy_mj": result.fleet_energy_mj,
        "curve_std": float(np.std(tail)) if tail else 0.0,
        "curve": points,
        "to_target": first_at_target(points, use_case.target, use_case.higher_is_better),
        "seconds": round(result.seconds, 2),
    }


def first_at_target(points: list[dict], target: float, higher_is_better: bool) -> dict | None:
    """The first curve point (with its budget) whose metric reaches the target, or None."""
    for point in points:
        value = point["metric"]
        if (value >= target) if higher_is_better else (value <= target):
            return point
    return None
