"""Meta-training in simulation: one algorithm, a simulated fleet, rounds, and the learning curve.

Every algorithm sees the same devices, cohorts (for the same K), samples and new-device
episodes for a given seed. Bytes are the lengths of the real encoded payloads; device compute is
counted in multiply-accumulates and turned into energy with a board profile.

Fleet costs count what the broker really sends: a device fetches the retained model only when
it is invited and does not hold the round's version (docs/protocol.md), so only the cohort
receives a model; each cohort device receives its command and the model and sends its update.
The model's values are encoded as the strategy's `model_values` asks (f32, f16, int8), and the
devices train on θ_g as they decode it; the server keeps θ_g in float32. `radio_bytes` counts
what crosses a device's radio link as MQTT packets: what it sends (the update's PUBLISH, the
command's PUBACK, the fetch's SUBSCRIBE, the model's PUBACK, UNSUBSCRIBE; `server.mqtt.
round_uplink`) and what the broker sends (command, SUBACK, model, UNSUBACK, the update's
PUBACK; `server.mqtt.round_downlink`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from broker_service.core import fastcodec
from broker_service.core.aggregate import SparseUpdate
from broker_service.core.bounds import InfluenceBounds, entry_budget, sample_budget
from broker_service.core.cohort import round_cohort
from broker_service.core.episode import Episode
from broker_service.core.fewshot import evaluate_on_episodes
from broker_service.core.initialisation import initial_theta
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import Strategy, wire_command
from broker_service.core.streams import device_stream
from broker_service.server.mqtt import PUBACK_BYTES, round_downlink, round_uplink
from broker_service.sim.clients import local_update
from broker_service.usecases.base import UseCase
from device_agent import codec
from device_agent.energy import DEFAULT_PROFILE, energy_mj, profile
from device_agent.topics import Topics

TOPICS = Topics()
"""The default topic tree: the topic lengths of the MQTT framing counted in `radio_bytes`."""


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
    update; payload bytes), `radio_bytes` their MQTT packets both ways; only the cohort receives
    a model, so `fleet_bytes_down` and `fleet_energy_mj` are the cohort's totals.
    `budget[i]` is the cost spent when `curve[i]` was measured.
    """

    algorithm: str
    theta: np.ndarray
    curve: list[tuple[int, float]]
    final: np.ndarray
    updates: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    radio_bytes: int = 0
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
    staleness: list[tuple[int, float, float]] = field(default_factory=list)
    """Per error-feedback update: (rounds away since the device's previous one, -1 for its
    first; L2 norm of the aged residual it added back; L2 norm of Δ before it)."""
    downweighted: int = 0
    capped_rounds: int = 0
    """Rounds whose step the growth bound scaled down (core.bounds)."""

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


def model_payload_bytes(n: int, values: str = "f32") -> int:
    """Length of the dense MODEL payload of n values encoded as `values` (f32, f16, int8):
    independent of the values themselves."""
    return len(fastcodec.encode_model(np.zeros(n, dtype=np.float32), 0, values))


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
    values = strategy.model_values()
    result.model_bytes = model_payload_bytes(len(theta), values) if strategy.federated else 0
    board_profile = profile(board)
    residuals: dict[str, Residual] = {}
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
            board_profile,
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


def _curve_point(net, theta, strategy, episodes, settings, use_case) -> float:
    if not episodes:
        return float("nan")
    values = evaluate_on_episodes(net, theta, strategy.split, episodes, settings, use_case.metric)
    return float(values.mean())


@dataclass
class Residual:
    """One simulated device's error-feedback memory: the residual and the round that last
    updated it (None: never), as the agent keeps them."""

    values: np.ndarray
    last_round: int | None = None


def _one_round(strategy, net, use_case, theta, when, residuals, result, board, tamper, bounds):
    """One round: the cohort fetches the model and trains on θ_g as sent, its updates pass the
    service's influence bounds, the broker's traffic and the devices' energy are counted, the
    strategy aggregates into the float32 θ_g. `when` is (round, total rounds, seed)."""
    t, rounds, seed = when
    cohort = round_cohort(use_case.device_ids, strategy.cohort_size(), seed, t)
    command = strategy.round_command(t, version=t)
    model = fastcodec.encode_model(theta, t, strategy.model_values())
    sent = fastcodec.model_values(model)
    command_len = len(codec.encode_command(wire_command(command), t, t))
    down = len(model) + command_len
    n = strategy.samples_per_update()
    budget = sample_budget(command)
    entries = entry_budget(command, len(theta))
    updates = []
    senders = []
    spent_mj = 0.0
    for device_id in cohort:
        xs, ys = use_case.stream(device_id, n, device_rng(seed, t, device_id))
        memory = residuals.setdefault(device_id, Residual(np.zeros(len(theta), np.float32)))
        sim = local_update(strategy, net, sent, xs, ys, command, memory.values, memory.last_round)
        if command.get("error_feedback") and not strategy.stored_data:
            away = -1 if memory.last_round is None else t - memory.last_round - 1
            result.staleness.append((away, sim.residual_norm, sim.delta_norm))
            memory.last_round = t
        header, idx, values = fastcodec.decode(sim.payload)
        update = SparseUpdate(idx, values, header.samples)
        kept = bounds.screen(
            tamper(device_id, update, t) if tamper else update, theta, budget, entries
        )
        if kept is None:
            result.refused_updates += 1
        else:
            bounds.remember(kept)
            updates.append(kept)
            senders.append(tamper.identity(device_id, t) if tamper else device_id)
        energy = energy_mj(sim.macs, len(sim.payload), down, board)
        result.updates += 1
        result.bytes_up += len(sim.payload)
        result.bytes_down += down
        result.radio_bytes += radio_bytes(device_id, len(sim.payload), command_len, len(model))
        result.macs += sim.macs
        spent_mj += energy
    result.device_energy_mj += spent_mj
    result.fleet_bytes_down += len(cohort) * down
    result.fleet_energy_mj += spent_mj
    result.per_round.append({"round": t, "cohort": len(cohort)})
    stepped = bounds.step(strategy, theta, updates, t, rounds, senders)
    result.downweighted += len(bounds.trust.downweighted)
    if stepped is None:
        result.refused_rounds += 1
        return theta
    result.capped_rounds += int(bounds.capped)
    return stepped


def radio_bytes(device: str, update_len: int, command_len: int, model_len: int) -> int:
    """The MQTT bytes of one device update on the device's link, both ways: up its update's
    PUBLISH, the command's PUBACK and the model's fetch (SUBSCRIBE, PUBACK, UNSUBSCRIBE); down
    the command, the fetch's SUBACK, model and UNSUBACK, and the update's PUBACK."""
    up = round_uplink(TOPICS, device, update_len, fetch=True)
    return up + round_downlink(TOPICS, device, command_len, model_len) + PUBACK_BYTES


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
        "capped_rounds": result.capped_rounds,
        "refused_updates": result.refused_updates,
        "refused_rounds": result.refused_rounds,
        "downweighted": result.downweighted,
        "bytes_up_per_update": result.bytes_up / n,
        "bytes_down_per_update": result.bytes_down / n,
        "radio_bytes_per_update": result.radio_bytes / n,
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
        **({"staleness": staleness_summary(result.staleness)} if result.staleness else {}),
    }


def staleness_summary(records: list[tuple[int, float, float]]) -> dict:
    """How stale the error-feedback residuals were, over a run's updates: rounds away before an
    update (first participations apart), the share of first participations, and the ratio of
    the residual added back to Δ (L2 norms; mean, median and 90th percentile over updates)."""
    away = np.array([a for a, _, _ in records if a >= 0], dtype=np.float64)
    ratio = np.array([r / d for a, r, d in records if a >= 0 and d > 0], dtype=np.float64)

    def spread(values: np.ndarray) -> dict:
        if not len(values):
            return {"mean": None, "median": None, "p90": None}
        return {
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "p90": float(np.percentile(values, 90)),
        }

    return {
        "updates": len(records),
        "first_participations": float(sum(a < 0 for a, _, _ in records) / len(records)),
        "rounds_away": spread(away),
        "residual_to_delta": spread(ratio),
    }


def first_at_target(points: list[dict], target: float, higher_is_better: bool) -> dict | None:
    """The first curve point (with its budget) whose metric reaches the target, or None."""
    for point in points:
        value = point["metric"]
        if (value >= target) if higher_is_better else (value <= target):
            return point
    return None
