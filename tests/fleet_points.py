"""A synthetic session's metric points for report tests, written by the service's own Recorder
(so they follow the schema the service writes): any fleet size, late and rejected devices,
devices that go offline, per-device energy and heap, on a simulated clock."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from broker_service.observe.metrics import LineFileSink
from broker_service.observe.recorder import Recorder
from broker_service.server.service import RoundReport
from broker_service.server.totals import Totals
from device_agent import reasons

ROUND_S = 30.0


class Clock:
    """Nanoseconds that advance by `step_s` a point, and jump at `advance`; from `start_s`
    (default: two days ago, so a store's `now()` bound keeps every point)."""

    def __init__(self, start_s: float | None = None, step_s: float = 0.001):
        self.ns = int((time.time() - 2 * 86400 if start_s is None else start_s) * 1e9)
        self.step = int(step_s * 1e9)

    def __call__(self) -> int:
        self.ns += self.step
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


def write_session(
    path: Path, devices: int = 20, rounds: int = 30, cohort: int = 5, seed: int = 0
) -> Path:
    """Write a session of `rounds` over `devices` devices (cohort a round) to `path`."""
    rng = np.random.default_rng(seed)
    ids = ["dev-%04d" % i for i in range(devices)]
    clock = Clock()
    service = SimpleNamespace(
        mqtt=SimpleNamespace(publish=lambda *a, **k: None),
        topics=SimpleNamespace(base="tinymetafed/default"),
        ledger=None,
        total_rounds=rounds,
        use_case=SimpleNamespace(metric="accuracy", higher_is_better=True),
        totals=Totals(),
    )
    recorder = Recorder(LineFileSink(path), "default", "kws", "tinymetafed")
    recorder._now = clock  # type: ignore[method-assign]
    recorder.attach(service)  # type: ignore[arg-type]
    heaps = {d: int(rng.integers(30_000, 120_000)) for d in ids}
    for i, d in enumerate(ids):
        birth = {"free_heap": heaps[d]}
        if i % 3 == 0:  # a third of the fleet on a battery (its projected life)
            birth.update(energy_profile=("nrf52840", "esp32")[i % 2], battery=(2000, 3.7, 0.8))
        recorder.presence(d, True, birth)
    recorder.evaluation(rng.normal(0.55, 0.1, 40))
    recorder.evaluated(0, 0.55)
    flaky = set(rng.choice(ids, size=max(1, devices // 10), replace=False))
    for r in range(rounds):
        clock.advance(ROUND_S * 0.4)
        _round(recorder, service, rng, ids, flaky, heaps, r, cohort)
    return path


def _round(recorder, service, rng, ids, flaky, heaps, r, cohort) -> None:
    invited = sorted(rng.choice(ids, size=cohort, replace=False))
    ledger = SimpleNamespace(invited=set(invited), accepted={}, refused={})
    rejected: Counter[str] = Counter()
    late = []
    for d in invited:
        roll = rng.random()
        if d in flaky and roll < 0.5:
            late.append(d)
            recorder.presence(d, False, {})
        elif roll < 0.03:
            ledger.refused[d] = reasons.BAD_SIGNATURE
            rejected[reasons.BAD_SIGNATURE] += 1
        else:
            ledger.accepted[d] = True
            telemetry = {
                "energy_mj": float(rng.normal(2.0, 0.3)),
                "heap_free": heaps[d] - int(rng.integers(0, 20_000)),
                "compute_ms": float(rng.normal(800, 100)),
            }
            recorder.device_update(d, r, telemetry, 380)
            recorder.device_telemetry(d, telemetry)
    recorder._now.advance(ROUND_S * 0.6)
    for d in late:
        recorder.presence(d, True, {"free_heap": heaps[d]})
    service.ledger = ledger
    n = len(ledger.accepted)
    service.totals.add_round(n, 380 * n, 4000 * n, 2.0 * n, rejected)
    service.totals.bytes_down += 5000 * cohort
    metric = float(0.55 + 0.3 * (1 - np.exp(-r / 10)) + rng.normal(0, 0.01))
    if r % 5 == 4:
        recorder.evaluation(rng.normal(metric, 0.1, 40))
    report = RoundReport(
        round=r,
        participants=sorted(ledger.accepted),
        late=late,
        rejected=dict(rejected),
        duplicates=0,
        attempts=1,
        outer_step=0.5,
        seconds=ROUND_S,
        metric=metric if r % 5 == 4 else None,
        totals=service.totals,
        bytes_up=380 * len(ledger.accepted),
        bytes_down=5000 * cohort,
    )
    recorder.round_closed(report, 4000, [float(rng.normal(0.5, 0.1))])
