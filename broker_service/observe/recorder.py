"""Turns service events into metric points (schema in docs/metrics.md) and hands them to a sink.

Writes are queued by the sink; nothing here waits on the network. Once attached to the running
service (`attach`), it also writes who took part in each round (`participation`) and publishes
the service's retained progress document (`observe.status`), which `tinymetafed status` reads,
and the devices' projected battery life (`battery_doc`). A device that states a battery in its
birth gets a `battery` point whenever what the service knows of it changes (observe.battery_life
projects it from its status and the telemetry of its rounds and wakes).
Numbers that come from devices (telemetry, presence) reach it already checked by
`server.inbound` (finite, 0 to `limits.MAX_REPORTED`); only fields of the right type are written,
and `metrics.line` leaves out NaN and infinities.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Protocol

import numpy as np

from broker_service.core.fewshot import ci95
from broker_service.observe.battery_life import DeviceEnergy, Projection, projection
from broker_service.observe.metrics import Sink, line
from broker_service.observe.status import battery_doc, battery_topic, progress_doc, progress_topic

TELEMETRY_FIELDS = (  # the numbers of a device's telemetry that are recorded (and checked)
    "samples",
    "compute_ms",
    "energy_mj",
    "heap_free",
    "heap_peak",
    "nnz",
    "loss_before",
    "loss_after",
    "macs",
    "bytes_sent",
    "bytes_received",
    "wake",  # a sleeping device's wake telemetry: its wake counter, the training and sensor
    "wakes",  # wakes since its previous telemetry, how long the wake lasted
    "sensor_wakes",
    "wake_ms",
)

BATTERY_STATUS = ("energy_profile", "battery", "wake_s")
"""Status fields that make a device's energy worth following (a battery, or a sleeping one)."""


ACCEPTED, LATE, REJECTED = "accepted", "late", "rejected"
"""The outcome of an invited device's turn in a round (the `participation` point's `outcome`)."""


class ServiceView(Protocol):
    """What `Recorder.attach` reads from the running service (server.service)."""

    mqtt: Any  # publish(topic, payload, qos, retain)
    topics: Any  # device_agent.topics.Topics
    ledger: Any  # server.rounds.RoundLedger of the round being closed, or None
    total_rounds: int
    use_case: Any  # usecases.base.UseCase
    totals: Any  # server.totals.Totals


def outcomes(ledger) -> dict[str, tuple[str, str | None]]:
    """{device: (outcome, reason)} for every device invited to a closed round: accepted, late
    (no answer by the close) or rejected with the reason its update was refused for."""
    out: dict[str, tuple[str, str | None]] = {}
    for device in sorted(set(ledger.invited) | set(ledger.accepted)):
        if device in ledger.accepted:
            out[device] = (ACCEPTED, None)
        elif device in ledger.refused:
            out[device] = (REJECTED, ledger.refused[device])
        else:
            out[device] = (LATE, None)
    return out


class Recorder:
    """Points for one fleet / use case / algorithm."""

    def __init__(self, sink: Sink, fleet: str, use_case: str, algorithm: str):
        self.sink = sink
        self.tags = {"fleet": fleet, "use_case": use_case, "algorithm": algorithm}
        self.last_ns = 0
        self.dropped = 0
        self.service: ServiceView | None = None
        self.metric_ci95: float | None = None
        self.eval_devices: int | None = None
        self.last_metric: dict[str, float | int | None] = {}
        self.energy: dict[str, DeviceEnergy] = {}  # devices on a battery, or sleeping ones
        self.projections: dict[str, Projection] = {}  # the latest of each device
        self.battery_published: dict | None = None

    def attach(self, service: ServiceView) -> None:
        """Follow the running service: from now on every closed round also records its
        participation, and the retained progress document is published (after a session point
        naming the metric and the planned rounds)."""
        self.service = service

    def evaluation(self, values: np.ndarray) -> None:
        """Keep the 95 % CI of an evaluation's per-episode values (one per new device); it is
        written with the metric of that evaluation."""
        self.metric_ci95 = ci95(np.asarray(values, dtype=np.float64))
        self.eval_devices = len(values)

    def _write(self, lines: list[str]) -> None:
        """Hand points to the sink; a sink that cannot store them (e.g. the local file on a full
        disk) loses them, counted in `dropped`: metrics never stop a round."""
        try:
            self.sink.write(lines)
        except OSError:
            self.dropped += len(lines)

    def _now(self) -> int:
        """Nanoseconds at least 1 ms apart, so no two points collide even in millisecond
        stores (VictoriaMetrics, Prometheus-style backends)."""
        now = time.time_ns()
        self.last_ns = max(now, self.last_ns + 1_000_000)
        return self.last_ns

    def round_closed(self, report, dense_bytes_per_update: int, losses: list[float]) -> None:
        """One `round` point per closed round."""
        t = report.totals
        participants = len(report.participants)
        fields = {
            "round": report.round,
            "participants": participants,
            "late": len(report.late),
            "duplicates": report.duplicates,
            "attempts": report.attempts,
            "rejected": sum(report.rejected.values()),
            "clipped": len(report.clipped),
            "downweighted": len(report.downweighted),
            "bytes_up": report.bytes_up,
            "bytes_down": report.bytes_down,
            "bytes_up_total": t.bytes_up,
            "bytes_down_total": t.bytes_down,
            "dense_bytes_up": dense_bytes_per_update * participants,
            "dense_bytes_up_total": t.dense_bytes_up,
            "saving": (dense_bytes_per_update * participants / report.bytes_up)
            if report.bytes_up
            else None,
            "outer_step": float(report.outer_step),
            "duration_s": float(report.seconds),
            "metric": report.metric,
            "metric_ci95": self.metric_ci95 if report.metric is not None else None,
            "energy_mj_total": float(t.energy_mj),
            "loss": float(sum(losses) / len(losses)) if losses else None,
        }
        for reason, count in report.rejected.items():
            fields["rejected_" + reason] = int(count)
        self._write([line("round", self.tags, fields, self._now())])
        if report.metric is not None:
            self.last_metric = {
                "value": report.metric,
                "ci95": self.metric_ci95,
                "round": report.round,
            }
        if self.service is not None:
            self._participation(report.round)
            self._publish(report.round + 1, report)

    def evaluated(self, rounds_done: int, metric: float) -> None:
        """The metric of the model before any round of this session (round = rounds done − 1)."""
        fields = {"round": rounds_done - 1, "metric": metric, "metric_ci95": self.metric_ci95}
        self.last_metric = {"value": metric, "ci95": self.metric_ci95, "round": rounds_done - 1}
        if self.service is not None:
            self._session_point()
        self._write([line("round", self.tags, fields, self._now())])
        if self.service is not None:
            self._publish(rounds_done, None)

    def _session_point(self) -> None:
        """What the session is: the metric's name and direction and the planned rounds."""
        assert self.service is not None
        use_case = self.service.use_case
        fields = {
            "metric_name": use_case.metric,
            "higher_is_better": bool(use_case.higher_is_better),
            "rounds_planned": int(self.service.total_rounds),
            "eval_devices": self.eval_devices,
        }
        self._write([line("session", self.tags, fields, self._now())])

    def _participation(self, round_no: int) -> None:
        """One `participation` point per device invited to the closed round."""
        assert self.service is not None
        ledger = self.service.ledger
        if ledger is None:
            return
        lines = []
        for device, (outcome, reason) in outcomes(ledger).items():
            fields = {"round": round_no, "outcome": outcome, "reason": reason}
            lines.append(
                line("participation", {**self.tags, "device": device}, fields, self._now())
            )
        self._write(lines)

    def _publish(self, rounds_done: int, report) -> None:
        """Publish the retained progress document (observe.status); never raises."""
        assert self.service is not None
        doc = progress_doc(
            self.tags,
            rounds_done,
            int(self.service.total_rounds),
            self.service.use_case.metric,
            self.last_metric,
            self.service.totals.to_dict(),
            report,
        )
        topic = progress_topic(self.service.topics.base)
        with contextlib.suppress(OSError, ValueError, RuntimeError):  # a round never fails for it
            self.service.mqtt.publish(topic, json.dumps(doc).encode(), qos=1, retain=True)
        self._publish_battery()

    def _publish_battery(self) -> None:
        """Publish the devices' projected battery life, retained, when it changed."""
        assert self.service is not None
        devices = battery_doc(self.projections)["devices"]
        if not devices or devices == self.battery_published:
            return
        doc = {"time": round(time.time(), 3), "devices": devices}
        topic = battery_topic(self.service.topics.base)
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            self.service.mqtt.publish(topic, json.dumps(doc).encode(), qos=1, retain=True)
            self.battery_published = devices

    def device_update(
        self, device: str, round_no: int, telemetry: dict, payload_bytes: int | None
    ) -> None:
        """One `device_update` point per accepted update (with the device's telemetry)."""
        fields = {"round": round_no, "payload_bytes": payload_bytes}
        for key in TELEMETRY_FIELDS:
            value = telemetry.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            fields[key] = float(value)
        self._write([line("device_update", {**self.tags, "device": device}, fields, self._now())])

    def device_telemetry(self, device: str, telemetry: dict) -> None:
        """Every telemetry document of a device the service follows the energy of (an idle or
        re-sending wake's too, not only an accepted update's): its battery projected again."""
        energy = self.energy.get(device)
        if energy is not None:
            now = self._now()
            energy.telemetry(telemetry, now / 1e9)
            self._battery(device, energy, now)

    def presence(self, device: str, online: bool, info: dict) -> None:
        """One `presence` point per change."""
        fields = {"online": int(online)}
        if isinstance(info.get("free_heap"), int):
            fields["free_heap"] = info["free_heap"]
        tags = {"fleet": self.tags["fleet"], "device": device}
        self._write([line("presence", tags, fields, self._now())])
        energy = self.energy.get(device)
        if energy is None and any(info.get(key) is not None for key in BATTERY_STATUS):
            energy = self.energy[device] = DeviceEnergy()
        if energy is not None and energy.status(info):
            self._battery(device, energy, self._now())

    def _battery(self, device: str, energy: DeviceEnergy, now: int) -> None:
        """Project `device`'s battery life again; a `battery` point at `now` (ns) when there is
        one."""
        found = projection(energy)
        if found is None:
            self.projections.pop(device, None)
            return
        self.projections[device] = found
        tags = {**self.tags, "device": device}
        self._write([line("battery", tags, found.fields(), now)])
