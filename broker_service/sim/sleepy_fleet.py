"""Simulated devices that sleep, over a real broker: every training wake is a real WakeAgent
(device_agent.sleepy, paho transport) whose round is computed with numpy, with its flash state
and its sensor ring in files of its own, run in a bounded pool of threads.

Each device wakes to train every `period_s` simulated seconds from its own phase, each wake
moved by up to ± `jitter` of a period (broker_service.sim.buffered's schedule: the phases drawn
from the seed), and the simulated clock runs `compression` times faster than the wall clock: a
wake due at simulated second s starts at wall second s / compression after `start()` (later
when the pool is busy or the device's previous wake still runs; the delay is measured).

Before its training wake k a device's ring receives the samples its sensor wakes took since
the previous one: `samples` sensor wakes (one sample each, every period_s / samples simulated
seconds), drawn from the use case's stream of (seed, k, device) as the simulation draws a
round's (sim.simulation.device_rng). The ring holds `samples` records, so a wake trains on the
samples of its own period. The wake then runs as on a board (docs/protocol.md, "Asynchronous
sessions", a device's training wake): it restores its flash state, connects, reads its retained
work order, drops an update the receipt acknowledged, sends an unacknowledged one again or
trains once on the ring (fetching the model only when it does not hold it), writes its state,
waits briefly for the receipt and disconnects. The round is broker_service.sim.fleet's
NumpyRunner reading the ring's samples and the agent's own error-feedback residual (the one its
flash state keeps) instead of the runner's.

    fleet = SleepyFleet("127.0.0.1", port, use_case, 20, folder, compression=360).start()
    ...  # the service in async mode takes its steps
    fleet.stop()
    fleet.stats.summary()
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from broker_service.core.hyperparams import settings_for
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import ALGORITHMS
from broker_service.sim.buffered import AsyncSchedule, first_wakes, next_wake
from broker_service.sim.fleet import NumpyRunner, agent_config
from broker_service.sim.simulation import device_rng
from broker_service.usecases.base import UseCase
from device_agent.agent import Agent
from device_agent.model import Plan
from device_agent.ring import Ring
from device_agent.round import round_settings
from device_agent.sleepy import WakeAgent, needed_samples

STOP_POLL_S = 0.05
"""How often the scheduler looks at its stop flag while it waits for the next wake."""


def round_samples(use_case: UseCase, settings: dict | None = None) -> int:
    """The samples a TinyMetaFed round of the use case's `settings` (its own by default)
    streams: what a training wake needs in its ring."""
    strategy = ALGORITHMS["tinymetafed"](settings or settings_for(use_case.name))
    command = round_settings(strategy.round_command(0, version=0))
    return needed_samples(Plan(use_case.spec), command)


class RingRunner(NumpyRunner):
    """NumpyRunner for a WakeAgent: the round's samples are read from the agent's sensor ring
    (the source the wake opened on it) and its error-feedback memory is the agent's residual
    and residual round (restored from flash and written back by the wake)."""

    def samples(self, agent: Agent, command: dict, count: int) -> tuple[np.ndarray, np.ndarray]:
        shape = tuple(self.use_case.spec["input"])
        xs, ys = [], []
        for x, y in itertools.islice(agent.source, count):
            xs.append(np.frombuffer(x, dtype=np.float32).reshape(shape).copy())
            ys.append(y if isinstance(y, int) else np.array(y, dtype=np.float32))
        classes = bool(ys) and isinstance(ys[0], int)
        return np.stack(xs), (np.array(ys) if classes else np.stack(ys))

    def memory(self, agent: Agent, n: int) -> tuple[np.ndarray, int | None]:
        return np.frombuffer(agent.residual, dtype=np.float32), agent.residual_round


@dataclass
class WakeStats:
    """What the fleet's wakes did, counted from the agents' own events and counters."""

    wakes: int = 0
    sensor_wakes: int = 0
    failed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    """Agent events of the wakes: trained, resent, receipt, idle:<why>, no_order, ..."""
    published: list[tuple[str, int]] = field(default_factory=list)
    """(device, version) of every update a wake trained and sent."""
    resent: list[tuple[str, int]] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0
    late_s: list[float] = field(default_factory=list)
    """How long after its scheduled wall time each wake started."""
    wake_s: list[float] = field(default_factory=list)
    """How long each training wake took (wall seconds)."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def event(self, device: str, name: str, fields: dict) -> None:
        """Count one agent event of `device`'s wake."""
        with self.lock:
            key = name
            if name == "idle":
                key = "idle:%s" % fields.get("why")
            elif name == "rejected":
                key = "rejected:%s:%s" % (fields.get("what"), fields.get("reason"))
            self.outcomes[key] += 1
            if name == "trained":
                self.published.append((device, int(fields["version"])))
            elif name == "resent":
                self.resent.append((device, int(fields["version"])))

    def summary(self) -> dict:
        """The counts, the bytes and the timing as a JSON-ready dict."""
        late = np.array(self.late_s or [0.0])
        took = np.array(self.wake_s or [0.0])
        return {
            "training_wakes": self.wakes,
            "sensor_wakes": self.sensor_wakes,
            "failed_wakes": self.failed,
            "outcomes": dict(sorted(self.outcomes.items())),
            "updates_sent": len(self.published),
            "distinct_updates_sent": len(set(self.published)),
            "updates_resent": len(self.resent),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "late_s_p50": float(np.percentile(late, 50)),
            "late_s_p99": float(np.percentile(late, 99)),
            "wake_s_p50": float(np.percentile(took, 50)),
            "wake_s_p99": float(np.percentile(took, 99)),
        }


class SleepyFleet:
    """The training wakes of `devices` of the use case's training devices on the broker at
    host:port, each device's flash state and ring in folder/DEVICE/; `start()`, then `stop()`.

    `samples`: sensor wakes (samples) a training period, by default what a round of the use
    case's `settings` streams; `workers`: the threads that run wakes at once."""

    def __init__(
        self,
        broker_host: str,
        broker_port: int,
        use_case: UseCase,
        devices: int,
        folder: Path,
        period_s: float = 3600.0,
        compression: float = 360.0,
        jitter: float = 0.1,
        seed: int = 0,
        workers: int = 8,
        fleet: str = "default",
        prefix: str = "tinymetafed",
        settings: dict | None = None,
        samples: int | None = None,
        order_ms: int = 5000,
        receipt_ms: int = 2000,
    ):
        if devices > len(use_case.device_ids):
            raise ValueError(
                "the %s use case has %d devices, %d asked for"
                % (use_case.name, len(use_case.device_ids), devices)
            )
        self.use_case = use_case
        self.devices = list(use_case.device_ids[:devices])
        self.schedule = AsyncSchedule(buffer=1, period_s=period_s, jitter=jitter)
        self.compression = float(compression)
        self.seed = seed
        self.workers = workers
        self.samples = samples or round_samples(use_case, settings)
        self.runner = RingRunner(use_case, NumpyNet(use_case.spec), seed)
        self.stats = WakeStats()
        self.configs: dict[str, dict] = {}
        self.locks = {d: threading.Lock() for d in self.devices}
        for device in self.devices:
            home = Path(folder) / device
            home.mkdir(parents=True, exist_ok=True)
            sleep = {
                "train_every_s": max(1, round(period_s)),
                "sense_every_s": max(1, round(period_s / self.samples)),
                "ring": self.samples,
                "state": str(home / "state.bin"),
                "ring_file": str(home / "ring.bin"),
                "order_ms": order_ms,
                "receipt_ms": receipt_ms,
            }
            self.configs[device] = agent_config(
                device, broker_host, broker_port, use_case, fleet, prefix, sleep=sleep
            )
        self.stopping = threading.Event()
        self.pool: ThreadPoolExecutor | None = None
        self.thread: threading.Thread | None = None
        self.started = 0.0

    def start(self) -> SleepyFleet:
        """Start the wake schedule: the first wakes are due from now on."""
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="wake")
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._schedule, name="wakes", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """No more wakes; the wakes under way end as they would (each within its order and
        receipt waits)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def simulated_s(self) -> float:
        """Simulated seconds since `start()`."""
        return (time.monotonic() - self.started) * self.compression

    def _schedule(self) -> None:
        """Submit each wake to the pool when its simulated time comes."""
        assert self.pool is not None
        rng = np.random.default_rng([self.seed, 0x5A])
        due = first_wakes(self.devices, self.schedule, self.seed)
        heap = [
            (when, i, device, 0)
            for i, (device, when) in enumerate(zip(self.devices, due, strict=True))
        ]
        heapq.heapify(heap)
        order = itertools.count(len(heap))
        while heap and not self.stopping.is_set():
            when, _, device, k = heap[0]
            wall = self.started + when / self.compression
            left = wall - time.monotonic()
            if left > 0:
                self.stopping.wait(min(left, STOP_POLL_S))
                continue
            heapq.heappop(heap)
            self.pool.submit(self._wake, device, k, wall)
            later = next_wake(when, self.schedule, rng)
            heapq.heappush(heap, (later, next(order), device, k + 1))

    def sense(self, device: str, k: int) -> None:
        """The sensor wakes of `device` before its training wake k: one sample each, appended
        to its ring."""
        cfg = self.configs[device]
        plan = Plan(cfg["spec"])
        ring = Ring(cfg["sleep"]["ring_file"], plan, cfg["sleep"]["ring"])
        xs, ys = self.use_case.stream(device, self.samples, device_rng(self.seed, k, device))
        for x, y in zip(xs, ys, strict=True):
            ring.append(np.asarray(x, dtype=np.float32).ravel(), _target(y))
        with self.stats.lock:
            self.stats.sensor_wakes += len(xs)

    def _wake(self, device: str, k: int, wall: float) -> None:
        """Training wake k of `device` (its sensor wakes first); never raises."""
        if self.stopping.is_set():
            return
        with self.locks[device]:
            start = time.monotonic()
            stats = self.stats
            try:
                self.sense(device, k)
                agent = WakeAgent(
                    self.configs[device],
                    round_runner=self.runner,
                    logger=lambda event, **f: stats.event(device, event, f),
                )
                status = agent.run_wake()
            except Exception as exc:  # noqa: BLE001 - a wake that breaks is counted, not fatal
                stats.event(device, "error:%s" % type(exc).__name__, {})
                status, agent = 1, None
            with stats.lock:
                stats.wakes += 1
                stats.failed += int(status != 0)
                stats.late_s.append(max(0.0, start - wall))
                stats.wake_s.append(time.monotonic() - start)
                if agent is not None:
                    stats.bytes_sent += agent.bytes_out
                    stats.bytes_received += agent.bytes_in


def _target(y) -> object:
    """A sample's target as the ring stores it: a class index, or the regression's values."""
    values = np.asarray(y)
    if values.ndim == 0 and np.issubdtype(values.dtype, np.integer):
        return int(values)
    return values.astype(np.float32).ravel()
