"""The aggregation service: rounds over a real MQTT broker, durable and idempotent.

Round t (model version t):
1. publish θ_g (retained MODEL payload) and pick a cohort of K online devices (seeded by
   (seed, t, attempt), so a restarted service picks the same devices);
2. send each its round command and collect updates until all answered or the deadline passed;
   every accepted update is journaled (fsync) before it counts;
3. with a quorum, close the round: aggregate with the strategy, write the checkpoint atomically,
   drop the journal; without one, invite a fresh cohort (up to `max_attempts`, then keep trying);
4. record who answered, who was late, who was rejected and why.
A restart resumes from the checkpoint and replays the open round's journal; devices asked again
for a round they already answered re-send the same update, which is counted once.
"""

from __future__ import annotations

import hmac
import json
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from broker_service.core.cohort import round_cohort, sample_cohort
from broker_service.core.fewshot import evaluate_on_episodes
from broker_service.core.hyperparams import settings_for
from broker_service.core.initialisation import initial_theta
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import ALGORITHMS
from broker_service.core.streams import CURVE_EPISODES, named_stream
from broker_service.observe.logs import EventLog
from broker_service.observe.metrics import Fanout, InfluxSink, LineFileSink, Sink
from broker_service.observe.recorder import Recorder
from broker_service.server import checkpoint
from broker_service.server.config import ConfigError, ServiceConfig
from broker_service.server.journal import Journal
from broker_service.server.mqtt import ServiceMqtt
from broker_service.server.presence import FleetView
from broker_service.server.rounds import Rejected, RoundLedger
from broker_service.usecases.registry import load_use_case
from device_agent import codec, reasons
from device_agent.auth import hmac_sha256, split_signed
from device_agent.energy import energy_mj, profile
from device_agent.topics import Topics


def load_hmac_keys(path: str | None) -> dict[str, bytes] | None:
    """{device id: key} from a JSON file of hex keys, or None when updates are not signed."""
    if not path:
        return None
    try:
        doc = json.loads(Path(path).read_text())
        return {str(device): bytes.fromhex(key) for device, key in doc.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError("hmac_keys_file %s: %s" % (path, type(exc).__name__)) from None


def metrics_sink(cfg: ServiceConfig, log: EventLog) -> Sink:
    """The line-protocol file (always) plus InfluxDB when `influx_url` is set."""
    path = Path(cfg.metrics_file) if cfg.metrics_file else Path(cfg.state_dir) / "metrics.lp"
    sinks: list[Sink] = [LineFileSink(path)]
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


@dataclass
class Totals:
    """Running totals over the session (kept in the checkpoint across restarts)."""

    updates: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    dense_bytes_up: int = 0
    energy_mj: float = 0.0
    rejected: Counter = field(default_factory=Counter)


@dataclass
class RoundReport:
    """What one closed round did; handed to progress callbacks and metric sinks."""

    round: int
    participants: list[str]
    late: list[str]
    rejected: dict
    duplicates: int
    attempts: int
    outer_step: float
    seconds: float
    metric: float | None
    totals: Totals
    bytes_up: int
    bytes_down: int
    loss: float | None = None


class AggregationService:
    """Runs the rounds; `run()` returns when all rounds are done or `stop` is set."""

    def __init__(
        self,
        cfg: ServiceConfig,
        log: EventLog | None = None,
        progress: Callable[[RoundReport], None] | None = None,
        stop: threading.Event | None = None,
    ):
        self.cfg = cfg
        self.log = log or EventLog()
        self.progress = progress
        self.stop = stop or threading.Event()
        self.use_case = load_use_case(cfg.use_case, cfg.data_dir, seed=cfg.seed)
        self.settings = settings_for(
            cfg.use_case, rounds=cfg.rounds, cohort=cfg.cohort, **cfg.settings
        )
        self.strategy = ALGORITHMS[cfg.algorithm](self.settings)
        self.net = NumpyNet(self.use_case.spec)
        self.n = self.strategy.global_size(self.net)
        self.total_rounds = int(self.settings["rounds"])
        self.topics = Topics(cfg.prefix, cfg.fleet)
        self.state = Path(cfg.state_dir)
        self.fleet = FleetView()
        self.totals = Totals()
        self.telemetry: dict[str, dict] = {}
        self.episodes = self.use_case.new_device_episodes(
            cfg.eval_devices, named_stream(cfg.seed, CURVE_EPISODES)
        )
        self.theta, self.round = self._resume()
        self.mqtt: ServiceMqtt | None = None
        self.ledger: RoundLedger | None = None
        self.previous_ledger: RoundLedger | None = None
        self.journal: Journal | None = None
        self.model_payload = b""
        self.metric_initial: float | None = None
        self.metric_last: float | None = None
        self.sink = metrics_sink(cfg, self.log)
        self.hmac_keys = load_hmac_keys(cfg.hmac_keys_file)
        self.norms: deque[float] = deque(maxlen=200)
        self.last_heartbeat = -1e9
        self.recorder = Recorder(self.sink, cfg.fleet, cfg.use_case, cfg.algorithm)

    # -- state --

    def checkpoint_path(self) -> Path:
        return self.state / "checkpoint.json"

    def _resume(self) -> tuple[np.ndarray, int]:
        path = self.checkpoint_path()
        if not path.exists():
            if self.cfg.init_checkpoint:
                return self._initial_from(self.cfg.init_checkpoint), 0
            theta = initial_theta(self.net, self.cfg.seed)[: self.n]
            return theta, 0
        ckpt = checkpoint.load(path)
        if (ckpt.use_case, ckpt.algorithm, len(ckpt.theta)) != (
            self.cfg.use_case,
            self.cfg.algorithm,
            self.n,
        ):
            raise checkpoint.CheckpointError(
                "%s holds %s/%s with %d parameters; this service runs %s/%s with %d"
                % (
                    path,
                    ckpt.use_case,
                    ckpt.algorithm,
                    len(ckpt.theta),
                    self.cfg.use_case,
                    self.cfg.algorithm,
                    self.n,
                )
            )
        extra = ckpt.extra.get("totals", {})
        self.totals = Totals(
            extra.get("updates", 0),
            extra.get("bytes_up", 0),
            extra.get("bytes_down", 0),
            extra.get("dense_bytes_up", 0),
            extra.get("energy_mj", 0.0),
            Counter(extra.get("rejected", {})),
        )
        self.log("resumed", round=ckpt.round, checkpoint=str(path))
        return ckpt.theta, ckpt.round

    def _initial_from(self, path: str) -> np.ndarray:
        """θ_g from a checkpoint of the same architecture (e.g. `tinymetafed init --from-onnx`)."""
        ckpt = checkpoint.load(path)
        mine = {k: self.use_case.spec.get(k) for k in ("input", "layers")}
        theirs = {k: ckpt.spec.get(k) for k in ("input", "layers")}
        if mine != theirs or len(ckpt.theta) < self.n:
            raise ConfigError(
                "init_checkpoint %s has another architecture than the %s model"
                % (path, self.cfg.use_case)
            )
        self.log("initialised", checkpoint=path)
        return np.asarray(ckpt.theta[: self.n], dtype=np.float32)

    def _save(self) -> None:
        t = self.totals
        ckpt = checkpoint.Checkpoint(
            spec=self.use_case.spec,
            theta=self.theta,
            round=self.round,
            algorithm=self.cfg.algorithm,
            use_case=self.cfg.use_case,
            settings=self.settings,
            split=self.strategy.split,
            extra={
                "seed": self.cfg.seed,
                "preprocessing": self.use_case.preprocessing,
                "totals": {
                    "updates": t.updates,
                    "bytes_up": t.bytes_up,
                    "bytes_down": t.bytes_down,
                    "dense_bytes_up": t.dense_bytes_up,
                    "energy_mj": t.energy_mj,
                    "rejected": dict(t.rejected),
                },
            },
        )
        checkpoint.save(self.checkpoint_path(), ckpt)

    # -- main loop --

    def run(self) -> dict:
        """Connect, run the remaining rounds, and return the session summary."""
        self.mqtt = ServiceMqtt(self.cfg, self.topics)
        self.mqtt.start()
        self.log(
            "started",
            broker=self.cfg.broker,
            use_case=self.cfg.use_case,
            algorithm=self.cfg.algorithm,
            round=self.round,
            rounds=self.total_rounds,
            params=self.n,
        )
        try:
            self.metric_initial = self.evaluate()
            self.log("evaluated", round=self.round, metric=self.metric_initial)
            self.recorder.evaluated(self.round, self.metric_initial)
            self._wait_for_devices()
            while self.round < self.total_rounds and not self.stop.is_set():
                self._run_round()
        finally:
            self.mqtt.stop()
            self.sink.close()
        return self.summary()

    def evaluate(self) -> float:
        """The few-shot metric of the current θ_g on the evaluation's new devices."""
        values = evaluate_on_episodes(
            self.net,
            self.theta,
            self.strategy.split,
            self.episodes,
            self.settings,
            self.use_case.metric,
        )
        return float(values.mean())

    def _wait_for_devices(self) -> None:
        need = min(self.strategy.cohort_size(), max(1, self.cfg.min_updates))
        deadline = time.monotonic() + self.cfg.wait_for_devices
        while len(self.fleet.online()) < need and time.monotonic() < deadline:
            if self.stop.is_set():
                return
            self._pump(0.2)
        settle = time.monotonic() + 0.5  # let the retained presence of the whole fleet arrive
        while time.monotonic() < settle:
            self._pump(settle - time.monotonic())
        self.log("fleet", online=len(self.fleet.online()))

    def _publish_model(self) -> None:
        self.model_payload = bytes(
            codec.encode(
                codec.KIND_MODEL, self.n, None, self.theta.tolist(), self.round, self.round
            )
        )
        assert self.mqtt is not None
        self.mqtt.publish(self.topics.model, self.model_payload, qos=1, retain=True)

    def _run_round(self) -> None:
        t = self.round
        start = time.monotonic()
        self._publish_model()
        self.previous_ledger = self.ledger
        self.ledger = RoundLedger(t, t, self.n, self.cfg.max_payload)
        self.journal = Journal(self.state / "journal", t)
        self._replay_journal()
        attempt = 0
        while not self.stop.is_set():
            self._invite(attempt)
            self._collect(time.monotonic() + self.cfg.round_timeout)
            if self.ledger.quorum_met(self.cfg.quorum, self.cfg.min_updates):
                break
            attempt += 1
            self.log(
                "quorum_missed",
                round=t,
                attempt=attempt,
                answered=len(self.ledger.accepted),
                invited=len(self.ledger.invited),
            )
            if attempt >= self.cfg.max_attempts:
                self._pump(min(5.0, self.cfg.round_timeout))
        if self.stop.is_set():
            return
        self._close(start)

    def _replay_journal(self) -> None:
        assert self.ledger is not None and self.journal is not None
        for device, payload in self.journal.replay():
            self.ledger.invited.add(device)
            try:
                if self.ledger.offer(device, payload):
                    self.log("replayed", round=self.round, device=device)
            except Rejected as exc:
                self.log("replay_skipped", round=self.round, device=device, reason=exc.reason)

    def _invite(self, attempt: int) -> None:
        """Attempt 0 draws the round's cohort from all online devices (so a restarted service
        draws the same one); later attempts draw fresh devices for the missing answers."""
        ledger = self.ledger
        assert ledger is not None
        rng = np.random.default_rng([self.cfg.seed, self.round, attempt])
        online = self.fleet.online()
        if attempt == 0:
            cohort = round_cohort(online, self.strategy.cohort_size(), self.cfg.seed, self.round)
        else:  # ask the silent ones again (they may be back) and fresh devices for the gap
            fresh = [d for d in online if d not in ledger.invited]
            want = self.strategy.cohort_size() - len(ledger.accepted)
            cohort = sorted(d for d in ledger.waiting_for() if d in online)
            cohort += sample_cohort(fresh, max(0, want - len(cohort)), rng)
        ledger.invite(cohort)
        self._send_commands([d for d in cohort if d not in ledger.accepted])
        self.log(
            "round_open",
            round=self.round,
            attempt=attempt,
            cohort=",".join(cohort),
            online=len(online),
        )

    def _send_commands(self, devices) -> None:
        assert self.mqtt is not None
        command = self.strategy.round_command(self.round, version=self.round)
        payload = bytes(codec.encode_command(command, self.round, self.round))
        for device in devices:
            self.mqtt.publish(self.topics.command(device), payload, qos=1)
            self.totals.bytes_down += len(payload) + len(self.model_payload)

    def _collect(self, deadline: float) -> None:
        assert self.ledger is not None
        while self.ledger.waiting_for() and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._pump(min(left, 0.5))

    def _close(self, start: float) -> None:
        ledger = self.ledger
        assert ledger is not None and self.journal is not None
        ledger.closed = True
        late = sorted(ledger.waiting_for())
        beta = self.strategy.outer_step(self.round, self.total_rounds)
        self.theta = np.asarray(
            self.strategy.aggregate(self.theta, ledger.updates(), self.round, self.total_rounds),
            dtype=np.float32,
        )
        round_up = sum(a.payload_bytes for a in ledger.accepted.values())
        self.totals.updates += len(ledger.accepted)
        self.totals.bytes_up += round_up
        self.totals.dense_bytes_up += len(ledger.accepted) * (
            codec.HEADER_SIZE + 4 * self.net.plan.n_params
        )
        self.totals.energy_mj += self._round_energy(ledger)
        self.totals.rejected.update(ledger.rejected)
        self.round += 1
        try:
            self._save()
            self.journal.remove()
        except OSError as exc:  # e.g. disk full: the previous checkpoint and the journal stay
            self.log("checkpoint_failed", round=self.round, error=str(exc))
        metric = None
        if self.round % max(1, self.cfg.eval_every) == 0 or self.round == self.total_rounds:
            metric = self.metric_last = self.evaluate()
        report = RoundReport(
            self.round - 1,
            sorted(ledger.accepted),
            late,
            dict(ledger.rejected),
            ledger.duplicates,
            ledger.attempts,
            beta,
            time.monotonic() - start,
            metric,
            self.totals,
            round_up,
            len(ledger.invited) * len(self.model_payload),
        )
        losses = [
            float(self.telemetry[d]["loss_after"])
            for d in report.participants
            if isinstance(self.telemetry.get(d, {}).get("loss_after"), (int, float))
        ]
        self.recorder.round_closed(report, codec.HEADER_SIZE + 4 * self.net.plan.n_params, losses)
        self.log(
            "round_closed",
            round=report.round,
            participants=len(report.participants),
            late=",".join(late) or None,
            rejected=dict(ledger.rejected) or None,
            duplicates=ledger.duplicates or None,
            metric=metric,
            seconds="%.2f" % report.seconds,
        )
        if self.round == self.total_rounds:
            self._publish_model()
        if self.progress:
            self.progress(report)

    def _round_energy(self, ledger: RoundLedger) -> float:
        total = 0.0
        for device in ledger.accepted:
            doc = self.telemetry.get(device, {})
            if doc.get("round") == ledger.round and isinstance(doc.get("energy_mj"), float):
                total += doc["energy_mj"]
            else:
                total += energy_mj(
                    0, ledger.accepted[device].payload_bytes, len(self.model_payload), profile()
                )
        return total

    # -- events --

    def _heartbeat(self) -> None:
        """Touch <state_dir>/heartbeat at most every 5 s (the container health check reads it)."""
        now = time.monotonic()
        if now - self.last_heartbeat < 5.0:
            return
        self.last_heartbeat = now
        path = self.state / "heartbeat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("%d %d\n" % (time.time(), self.round))

    def _pump(self, timeout: float) -> None:
        assert self.mqtt is not None
        self._heartbeat()
        event = self.mqtt.next_event(timeout)
        while event is not None:
            self._handle(event)
            event = self.mqtt.next_event(0)

    def _handle(self, event) -> None:
        if event.kind == "connected":
            self.log("broker_connected", round=self.round)
            if self.model_payload:
                assert self.mqtt is not None
                self.mqtt.publish(self.topics.model, self.model_payload, qos=1, retain=True)
            if self.ledger is not None and not self.ledger.closed:
                self._send_commands(sorted(self.ledger.waiting_for()))
            return
        if event.kind in ("disconnected", "refused"):
            self.log("broker_" + event.kind, round=self.round, reason=event.payload.decode())
            return
        device, leaf = self.topics.device_of(event.topic)
        if device is None:
            return
        if leaf == "status":
            changed = self.fleet.update(device, event.payload)
            if changed is not None:
                self.log("presence", device=device, online=changed.online)
                self.recorder.presence(device, changed.online, changed.info)
                ledger = self.ledger
                if (
                    changed.online
                    and ledger is not None
                    and not ledger.closed
                    and device in ledger.waiting_for()
                ):
                    self._send_commands([device])  # back after a reboot: ask again now
        elif leaf == "update":
            self._on_update(device, event.payload)
        elif leaf == "telemetry":
            self._on_telemetry(device, event.payload)

    def _authenticate(self, device: str, message: bytes) -> bytes:
        """The payload of a signed message from `device`; raises Rejected when it is not."""
        if self.hmac_keys is None:
            return message
        key = self.hmac_keys.get(device)
        if key is None:
            raise Rejected(reasons.UNKNOWN_DEVICE, device)
        payload, tag = split_signed(message)
        if payload is None or not hmac.compare_digest(hmac_sha256(key, payload), tag):
            raise Rejected(reasons.BAD_SIGNATURE, device)
        return payload

    def _norm_bound(self) -> float:
        """The configured bound, or 100× the median norm of the last 200 accepted updates
        (once 20 are known): only absurd updates are refused here; robust aggregation
        (clip_scale) handles subtler ones."""
        if self.cfg.max_update_norm > 0:
            return self.cfg.max_update_norm
        if len(self.norms) < 20:
            return 0.0
        return 100.0 * float(np.median(self.norms))

    def _on_update(self, device: str, message: bytes) -> None:
        ledger = self.ledger
        if ledger is None:
            self.totals.rejected[reasons.NO_OPEN_ROUND] += 1
            self.log("rejected", device=device, reason=reasons.NO_OPEN_ROUND)
            return
        try:
            payload = self._authenticate(device, message)
            ledger.max_norm = self._norm_bound()
            accepted = ledger.offer(device, payload)
        except Rejected as exc:
            ledger.reject(exc.reason)
            if device in ledger.invited and exc.reason not in (
                reasons.LATE,
                reasons.WRONG_ROUND,
                reasons.STORAGE_ERROR,
            ):
                ledger.refused.setdefault(device, exc.reason)
            self.log(
                "rejected", round=self.round, device=device, reason=exc.reason, detail=str(exc)
            )
            return
        if accepted is None:
            self.log("duplicate", round=self.round, device=device)
            return
        try:
            assert self.journal is not None
            self.journal.append(device, payload)
        except OSError as exc:
            del ledger.accepted[device]
            ledger.reject(reasons.STORAGE_ERROR)
            self.log(
                "rejected",
                round=self.round,
                device=device,
                reason=reasons.STORAGE_ERROR,
                detail=str(exc),
            )
            return
        self.norms.append(float(np.linalg.norm(accepted.update.values)))
        self.log("accepted", round=self.round, device=device, bytes=len(payload), nnz=accepted.nnz)

    def _on_telemetry(self, device: str, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
        except ValueError:
            self.log("rejected", device=device, reason=reasons.BAD_TELEMETRY)
            return
        if not isinstance(doc, dict):
            return
        self.telemetry[device] = doc
        for ledger in (self.ledger, self.previous_ledger):
            if (
                ledger is not None
                and doc.get("round") == ledger.round
                and device in ledger.accepted
            ):
                self.recorder.device_update(
                    device, ledger.round, doc, ledger.accepted[device].payload_bytes
                )

    def metrics_path(self) -> Path:
        return Path(self.cfg.metrics_file) if self.cfg.metrics_file else self.state / "metrics.lp"

    def summary(self) -> dict:
        """The session's figures (for the demo table and tests)."""
        t = self.totals
        return {
            "use_case": self.cfg.use_case,
            "algorithm": self.cfg.algorithm,
            "rounds": self.round,
            "metric": self.use_case.metric,
            "metric_initial": self.metric_initial,
            "metric_final": self.metric_last,
            "updates": t.updates,
            "bytes_up": t.bytes_up,
            "bytes_down": t.bytes_down,
            "dense_bytes_up": t.dense_bytes_up,
            "upload_saving": (t.dense_bytes_up / t.bytes_up) if t.bytes_up else math.nan,
            "energy_mj": t.energy_mj,
            "rejected": dict(t.rejected),
            "checkpoint": str(self.checkpoint_path()),
            "metrics": str(self.metrics_path()),
        }
