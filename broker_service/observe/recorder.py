"""Turns service events into metric points (schema in docs/metrics.md) and hands them to a sink.

Writes are queued by the sink; nothing here waits on the network. Numbers that come from devices
(telemetry, presence) reach it already checked by `server.inbound` (finite, 0 to
`limits.MAX_REPORTED`); only fields of the right type are written, and `metrics.line` leaves out
NaN and infinities.
"""

from __future__ import annotations

import time

from broker_service.observe.metrics import Sink, line

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
)


class Recorder:
    """Points for one fleet / use case / algorithm."""

    def __init__(self, sink: Sink, fleet: str, use_case: str, algorithm: str):
        self.sink = sink
        self.tags = {"fleet": fleet, "use_case": use_case, "algorithm": algorithm}
        self.last_ns = 0

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
            "bytes_up": report.bytes_up,
            "bytes_down": report.bytes_down,
            "bytes_up_total": t.bytes_up,
            "bytes_down_total": t.bytes_down,
            "dense_bytes_up": dense_bytes_per_update * participants,
            "saving": (dense_bytes_per_update * participants / report.bytes_up)
            if report.bytes_up
            else None,
            "outer_step": float(report.outer_step),
            "duration_s": float(report.seconds),
            "metric": report.metric,
            "energy_mj_total": float(t.energy_mj),
            "loss": float(sum(losses) / len(losses)) if losses else None,
        }
        for reason, count in report.rejected.items():
            fields["rejected_" + reason] = int(count)
        self.sink.write([line("round", self.tags, fields, self._now())])

    def evaluated(self, rounds_done: int, metric: float) -> None:
        """The metric of the model before any round of this session (round = rounds done − 1)."""
        self.sink.write(
            [line("round", self.tags, {"round": rounds_done - 1, "metric": metric}, self._now())]
        )

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
        self.sink.write(
            [line("device_update", {**self.tags, "device": device}, fields, self._now())]
        )

    def presence(self, device: str, online: bool, info: dict) -> None:
        """One `presence` point per change."""
        fields = {"online": int(online)}
        if isinstance(info.get("free_heap"), int):
            fields["free_heap"] = info["free_heap"]
        tags = {"fleet": self.tags["fleet"], "device": device}
        self.sink.write([line("presence", tags, fields, self._now())])
