"""What the aggregation service tells the world: round reports, metrics, evaluation, summary.

The round loop (`service.py`) decides; this module only turns what happened into figures. Each
closed round is added to the running totals (`count_round`), described by a `RoundReport`, and
written as one metric point plus one `round_closed` log line (`record_round`); the few-shot
metric is measured on the evaluation's new devices every `eval_every` rounds and after the last
one (`evaluate`, `evaluation_due`). Metric points go to the line-protocol file and, when
configured, to InfluxDB (`metrics_sink`); the service's figures at the end are gathered by
`summary_of`, and `Heartbeat` touches the file the container health check reads.

Kept apart from the loop so that a change to what is reported cannot change what a round does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from broker_service.core.episode import Episode
from broker_service.core.fewshot import evaluate_on_episodes
from broker_service.core.nn import NumpyNet
from broker_service.observe.logs import EventLog
from broker_service.observe.metrics import Fanout, InfluxSink, LineFileSink, Sink
from broker_service.observe.recorder import Recorder
from broker_service.server.config import ServiceConfig
from broker_service.server.rounds import RoundLedger
from broker_service.server.totals import Totals
from broker_service.usecases.base import UseCase
from device_agent import codec
from device_agent.energy import energy_mj, profile

HEARTBEAT_EVERY = 5.0
"""Seconds between two touches of the heartbeat file at most."""


@dataclass
class RoundReport:
    """What one closed round did; handed to progress callbacks and metric sinks."""

    round: int
    participants: list[str]
    late: list[str]
    rejected: dict[str, int]
    duplicates: int
    attempts: int
    outer_step: float
    seconds: float
    metric: float | None
    totals: Totals
    bytes_up: int
    bytes_down: int
    loss: float | None = None
    clipped: list[str] = field(default_factory=list)
    downweighted: list[str] = field(default_factory=list)


def metrics_path(cfg: ServiceConfig) -> Path:
    """The line-protocol metrics file: `metrics_file`, or metrics.lp in the state folder."""
    return Path(cfg.metrics_file) if cfg.metrics_file else Path(cfg.state_dir) / "metrics.lp"


def metrics_sink(cfg: ServiceConfig, log: EventLog) -> Sink:
    """The line-protocol file (always) plus InfluxDB when `influx_url` is set."""
    sinks: list[Sink] = [LineFileSink(metrics_path(cfg))]
    if cfg.influx_url:
        sinks.append(
            InfluxSink(
                cfg.influx_url,
                cfg.influx_token or "",
                cfg.influx_org,
                cfg.influx_bucket,
                Path(cfg.state_dir) / "metrics-spool",
                log=log,
            )
        )
    return Fanout(sinks)


def evaluate(
    net: NumpyNet,
    theta: np.ndarray,
    split: bool,
    episodes: list[Episode],
    settings: dict,
    metric: str,
    recorder: Recorder,
) -> float:
    """The few-shot `metric` of θ_g on the evaluation's new devices (`episodes`); the recorder
    keeps the per-device values' 95 % CI for the next metric point."""
    values = evaluate_on_episodes(net, theta, split, episodes, settings, metric)
    recorder.evaluation(values)
    return float(values.mean())


def evaluation_due(round_: int, total_rounds: int, eval_every: int) -> bool:
    """True every `eval_every` rounds and after the last one (`round_` rounds are done)."""
    return round_ % max(1, eval_every) == 0 or round_ == total_rounds


def dense_update_bytes(net: NumpyNet) -> int:
    """The size of one dense float32 update of all parameters (the upload saving's basis)."""
    return codec.HEADER_SIZE + 4 * net.plan.n_params


def round_energy(ledger: RoundLedger, telemetry: dict[str, dict], model_bytes: int) -> float:
    """The devices' energy for the round: as reported in their telemetry, else estimated from
    the bytes exchanged (the update and a `model_bytes` model) with the default board profile."""
    total = 0.0
    estimates: dict[int, float] = {}  # by update size: the same estimate for the same bytes
    for entry in ledger.entries():
        doc = telemetry.get(entry.device, {})
        if doc.get("round") == entry.round and isinstance(doc.get("energy_mj"), float):
            total += doc["energy_mj"]
        else:
            size = entry.payload_bytes
            if size not in estimates:
                estimates[size] = energy_mj(0, size, model_bytes, profile())
            total += estimates[size]
    return total


def count_round(
    totals: Totals,
    ledger: RoundLedger,
    telemetry: dict[str, dict],
    dense_bytes: int,
    model_bytes: int,
) -> None:
    """Add the round's updates, bytes up, energy and rejections to the running `totals`
    (`dense_bytes` is one dense update's size, `model_bytes` the model's)."""
    updates = len(ledger.entries())
    totals.add_round(
        updates=updates,
        bytes_up=ledger.bytes_up(),
        dense_bytes_up=updates * dense_bytes,
        energy_mj=round_energy(ledger, telemetry, model_bytes),
        rejected=ledger.rejected,
    )


def round_report(
    ledger: RoundLedger,
    late: list[str],
    outer_step: float,
    seconds: float,
    metric: float | None,
    totals: Totals,
    bytes_down: int,
) -> RoundReport:
    """The figures of the closed round of `ledger` (its clipped and down-weighted devices are
    the caller's to fill in)."""
    return RoundReport(
        round=ledger.round,
        participants=sorted(ledger.accepted),
        late=late,
        rejected=dict(ledger.rejected),
        duplicates=ledger.duplicates,
        attempts=ledger.attempts,
        outer_step=outer_step,
        seconds=seconds,
        metric=metric,
        totals=totals,
        bytes_up=ledger.bytes_up(),
        bytes_down=bytes_down,
    )


def reported_losses(participants: list[str], telemetry: dict[str, dict]) -> list[float]:
    """The loss after adaptation each participant reported in its latest telemetry."""
    return [
        float(telemetry[d]["loss_after"])
        for d in participants
        if isinstance(telemetry.get(d, {}).get("loss_after"), (int, float))
    ]


def record_round(
    log: EventLog,
    recorder: Recorder,
    report: RoundReport,
    telemetry: dict[str, dict],
    dense_bytes: int,
) -> None:
    """Write the round's metric point and its `round_closed` log line."""
    losses = reported_losses(report.participants, telemetry)
    recorder.round_closed(report, dense_bytes, losses)
    log(
        "round_closed",
        round=report.round,
        participants=len(report.participants),
        late=",".join(report.late) or None,
        rejected=report.rejected or None,
        duplicates=report.duplicates or None,
        clipped=",".join(report.clipped) or None,
        downweighted=",".join(report.downweighted) or None,
        metric=report.metric,
        seconds="%.2f" % report.seconds,
    )


class SummaryView(Protocol):
    """What `summary_of` reads from the service (`service.AggregationService`)."""

    cfg: ServiceConfig
    use_case: UseCase
    round: int
    metric_initial: float | None
    metric_last: float | None
    totals: Totals

    def checkpoint_path(self) -> Path: ...

    def metrics_path(self) -> Path: ...


def summary_of(service: SummaryView) -> dict:
    """The service's figures (for the demo table and tests): what ran, the rounds done, the
    metric before and after, the totals, and where the checkpoint and the metric points are."""
    cfg, totals = service.cfg, service.totals
    t = totals.to_dict()
    return {
        "use_case": cfg.use_case,
        "algorithm": cfg.algorithm,
        "rounds": service.round,
        "metric": service.use_case.metric,
        "metric_initial": service.metric_initial,
        "metric_final": service.metric_last,
        "updates": t["updates"],
        "bytes_up": t["bytes_up"],
        "bytes_down": t["bytes_down"],
        "dense_bytes_up": t["dense_bytes_up"],
        "upload_saving": totals.upload_saving(),
        "energy_mj": t["energy_mj"],
        "rejected": t["rejected"],
        "checkpoint": str(service.checkpoint_path()),
        "metrics": str(service.metrics_path()),
    }


class Heartbeat:
    """Touches a file with the time and the round, at most every HEARTBEAT_EVERY s: the
    container health check reads it to tell a live service from a stuck one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = -1e9

    def beat(self, round_: int) -> None:
        """Write `<unix time> <round>` to the file unless it was written less than
        HEARTBEAT_EVERY s ago."""
        now = time.monotonic()
        if now - self.last < HEARTBEAT_EVERY:
            return
        self.last = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("%d %d\n" % (time.time(), round_))
