"""Asynchronous meta-training in simulation: a fleet of devices that wake on their own schedule,
and a service that steps when its buffer is full (docs/protocol.md, "Asynchronous sessions").

Each training device wakes every `period_s` seconds from its own phase (drawn from the seed,
each wake moved by up to ± `jitter` of a period). On a wake it trains on the model version the
service holds at that moment, unless it already trained on that version (one update per device
per model version), and its update reaches the service `round_s` seconds later (connecting,
fetching, training and publishing take that long): versions published meanwhile make it stale.
The service admits it as a round would (the same influence bounds), weighs it by
(1 + staleness)^-power, refuses it past `max_staleness`, and takes the strategy's outer step
once `buffer` updates are in, β_t counting steps; a step open for `step_timeout` (by default
the longest a device can take to answer a new version: a period, its jitter and `round_s`) is
taken with what it holds, as the service's `step_timeout` does (so a buffer
larger than the devices that can fill it, or one short of refused updates, still steps). A
step that nothing can fill, every device's update on it refused and none in flight, ends the
run with StepStalled rather than waiting for ever. Devices, sample streams (a device's k-th
training wake draws what its k-th round would), new-device episodes, payloads and energy are
those of the invited-rounds simulation (sim.simulation), so the two compare at equal device
updates.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from broker_service.core import fastcodec
from broker_service.core.aggregate import SparseUpdate
from broker_service.core.bounds import InfluenceBounds, entry_budget, sample_budget
from broker_service.core.episode import Episode
from broker_service.core.fewshot import evaluate_on_episodes
from broker_service.core.initialisation import initial_theta
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import Strategy, wire_command
from broker_service.server.steps import staleness_weight
from broker_service.sim.clients import local_update
from broker_service.sim.simulation import Residual, RunResult, device_rng, model_payload_bytes
from broker_service.sim.simulation import radio_bytes as round_radio_bytes
from broker_service.usecases.base import UseCase
from device_agent import codec
from device_agent.energy import DEFAULT_PROFILE, energy_mj, profile


@dataclass(frozen=True)
class AsyncSchedule:
    """When devices train and how the service buffers: a training wake every `period_s` per
    device (± `jitter` of a period), an update arriving `round_s` after its wake, a step every
    `buffer` accepted updates or, with at least one, `step_timeout` after it opened (None: the
    longest a device takes to answer a new version, a period and its jitter and `round_s`),
    staleness weight (1 + s)^-`staleness_power`, updates more than `max_staleness`
    versions behind refused."""

    buffer: int
    period_s: float = 3600.0
    round_s: float = 30.0
    jitter: float = 0.1
    staleness_power: float = 0.5
    max_staleness: int = 8
    step_timeout: float | None = None

    def timeout_s(self) -> float:
        """Seconds a step stays open waiting for its buffer to fill."""
        if self.step_timeout is not None:
            return self.step_timeout
        return self.period_s * (1.0 + self.jitter) + self.round_s


class StepStalled(RuntimeError):
    """No device can add to the open step: every update on its version was refused and none is
    on its way (the service would wait for a new device)."""


@dataclass(order=True)
class _Event:
    """A wake (update None), an update's arrival at the service, or the deadline of the step
    of version `deadline`, ordered by time."""

    when: float
    order: int
    device: str = field(compare=False)
    update: tuple | None = field(compare=False, default=None)
    deadline: int | None = field(compare=False, default=None)


@dataclass
class AsyncRun:
    """What an asynchronous run measured beyond RunResult: the staleness of each admitted
    update, the refusals past the bound, wakes that found no new version, and the simulated
    seconds the run took."""

    result: RunResult
    staleness: list[int] = field(default_factory=list)
    too_stale: int = 0
    idle_wakes: int = 0
    simulated_s: float = 0.0
    timeout_steps: int = 0  # steps taken at their deadline, their buffer not full


def first_wakes(devices: list[str], schedule: AsyncSchedule, seed: int) -> list[float]:
    """Each device's first wake: a phase uniform in [0, period_s), from the seed."""
    rng = np.random.default_rng([seed, 0xA5])
    return [float(x) for x in rng.uniform(0.0, schedule.period_s, len(devices))]


def next_wake(when: float, schedule: AsyncSchedule, rng: np.random.Generator) -> float:
    """The wake after one at `when`: a period later, moved by up to ± jitter of a period."""
    shift = rng.uniform(-schedule.jitter, schedule.jitter) * schedule.period_s
    return when + schedule.period_s + shift


class _Service:
    """The simulated service's state: θ_g, its version, the buffer and its senders."""

    def __init__(self, theta: np.ndarray) -> None:
        self.theta = theta
        self.version = 0
        self.buffer: list[SparseUpdate] = []
        self.senders: list[str] = []
        self.overdue = False  # the open step's deadline passed with nothing in its buffer
        self.in_flight = 0  # updates trained and not yet arrived


def run_async(
    strategy: Strategy,
    use_case: UseCase,
    settings: dict,
    seed: int,
    curve_episodes: list[Episode],
    final_episodes: list[Episode],
    schedule: AsyncSchedule,
    progress: Callable[[str], None] | None = None,
    board: str = DEFAULT_PROFILE,
) -> AsyncRun:
    """Meta-train asynchronously until settings['rounds'] aggregation steps are taken; the
    curve is measured every `eval_every` steps (its budget counts device updates)."""
    start = time.perf_counter()
    bounds = InfluenceBounds.from_settings(settings)
    net = NumpyNet(use_case.spec)
    steps = int(settings["rounds"])
    service = _Service(initial_theta(net, seed)[: strategy.global_size(net)])
    run = AsyncRun(RunResult(strategy.name, service.theta, [], np.array([])))
    result = run.result
    result.model_bytes = model_payload_bytes(len(service.theta), strategy.model_values())
    every = max(1, int(settings["eval_every"]))
    result.curve.append(
        (0, _metric(net, service.theta, strategy, curve_episodes, settings, use_case))
    )
    result.budget.append(result.spent(0))
    devices = list(use_case.device_ids)
    rng = np.random.default_rng([seed, 0x5A])
    events = [
        _Event(w, i, d)
        for i, (d, w) in enumerate(zip(devices, first_wakes(devices, schedule, seed), strict=True))
    ]
    heapq.heapify(events)
    order = len(events)
    trained: dict[str, int] = {}
    wakes: dict[str, int] = {}
    residuals: dict[str, Residual] = {}
    board_profile = profile(board)
    order += 1
    heapq.heappush(events, _Event(schedule.timeout_s(), order, "", deadline=0))
    while service.version < steps and events:
        event = heapq.heappop(events)
        run.simulated_s = event.when
        if event.deadline is not None:
            if event.deadline != service.version:
                continue  # its step was taken when its buffer filled
            if not service.buffer:
                _check_stalled(service, devices, trained)
                service.overdue = True  # the next update admitted takes the step
                continue
            run.timeout_steps += 1
        elif event.update is None:
            order += 1
            heapq.heappush(
                events, _Event(next_wake(event.when, schedule, rng), order, event.device)
            )
            if trained.get(event.device) == service.version:
                run.idle_wakes += 1
                continue
            trained[event.device] = service.version
            k = wakes.get(event.device, 0)
            wakes[event.device] = k + 1
            update = _train(
                strategy,
                net,
                use_case,
                service,
                event.device,
                (k, steps, seed),
                residuals,
                result,
                board_profile,
            )
            order += 1
            service.in_flight += 1
            heapq.heappush(
                events, _Event(event.when + schedule.round_s, order, event.device, update)
            )
            continue
        else:
            service.in_flight -= 1
            full = _arrive(service, event, schedule, bounds, run)
            if not (full or (service.overdue and service.buffer)):
                if not service.buffer and service.overdue:
                    _check_stalled(service, devices, trained)
                continue
            run.timeout_steps += int(not full)
        _step(strategy, service, bounds, steps, result)
        order += 1
        heapq.heappush(
            events, _Event(event.when + schedule.timeout_s(), order, "", deadline=service.version)
        )
        if service.version % every == 0 or service.version == steps:
            value = _metric(net, service.theta, strategy, curve_episodes, settings, use_case)
            result.curve.append((service.version, value))
            result.budget.append(result.spent(service.version))
            if progress:
                progress(
                    "%s async step %d/%d %s=%.4f"
                    % (strategy.name, service.version, steps, use_case.metric, value)
                )
    result.theta = service.theta
    result.final = evaluate_on_episodes(
        net, service.theta, strategy.split, final_episodes, settings, use_case.metric
    )
    result.seconds = time.perf_counter() - start
    return run


def _check_stalled(service: _Service, devices: list[str], trained: dict[str, int]) -> None:
    """Raise StepStalled when the open step's buffer is empty, no update is on its way and
    every device already trained on its version."""
    if service.in_flight or service.buffer:
        return
    if all(trained.get(d) == service.version for d in devices):
        raise StepStalled(
            "step %d: every device's update on it was refused and none is on its way"
            % service.version
        )


def _metric(net, theta, strategy, episodes, settings, use_case) -> float:
    if not episodes:
        return float("nan")
    return float(
        evaluate_on_episodes(net, theta, strategy.split, episodes, settings, use_case.metric).mean()
    )


def _train(strategy, net, use_case, service, device, when, residuals, result, board) -> tuple:
    """A device's training wake on the service's current version: its update (as the
    service decodes it), the version it was computed on and the round's budgets; the device's
    bytes and energy are counted as in a round."""
    k, steps, seed = when
    version = service.version
    command = strategy.round_command(version, version=version)
    model = fastcodec.encode_model(service.theta, version, strategy.model_values())
    sent = fastcodec.model_values(model)
    command_len = len(codec.encode_command(wire_command(command), version, version))
    xs, ys = use_case.stream(device, strategy.samples_per_update(), device_rng(seed, k, device))
    memory = residuals.setdefault(device, Residual(np.zeros(len(service.theta), np.float32)))
    sim = local_update(strategy, net, sent, xs, ys, command, memory.values, memory.last_round)
    if command.get("error_feedback") and not strategy.stored_data:
        memory.last_round = version
    header, idx, values = fastcodec.decode(sim.payload)
    down = len(model) + command_len
    result.updates += 1
    result.bytes_up += len(sim.payload)
    result.bytes_down += down
    result.fleet_bytes_down += down
    result.radio_bytes += round_radio_bytes(device, len(sim.payload), command_len, len(model))
    result.macs += sim.macs
    spent = energy_mj(sim.macs, len(sim.payload), down, board)
    result.device_energy_mj += spent
    result.fleet_energy_mj += spent
    budgets = (sample_budget(command), entry_budget(command, len(service.theta)))
    return SparseUpdate(idx, values, header.samples), version, budgets


def _arrive(service, event, schedule, bounds, run) -> bool:
    """Admit an arriving update into the buffer (or refuse it); True when the buffer is full."""
    update, version, (budget, entries) = event.update
    stale = service.version - version
    if stale > schedule.max_staleness:
        run.too_stale += 1
        return False
    kept = bounds.screen(update, service.theta, budget, entries)
    if kept is None:
        run.result.refused_updates += 1
        return False
    bounds.remember(kept)
    weight = staleness_weight(stale, schedule.staleness_power)
    service.buffer.append(replace(kept, weight=kept.weight * weight))
    service.senders.append(event.device)
    run.staleness.append(stale)
    return len(service.buffer) >= schedule.buffer


def _step(strategy, service, bounds, steps, result) -> None:
    """The buffered step: θ_g moves by the strategy's outer step over the buffer (β_t by step)."""
    stepped = bounds.step(
        strategy, service.theta, service.buffer, service.version, steps, service.senders
    )
    result.downweighted += len(bounds.trust.downweighted)
    result.per_round.append({"round": service.version, "cohort": len(service.buffer)})
    if stepped is None:
        result.refused_rounds += 1
    else:
        result.capped_rounds += int(bounds.capped)
        service.theta = stepped
    service.version += 1
    service.buffer, service.senders = [], []
    service.overdue = False
