"""The aggregation service: rounds over a real MQTT broker, durable and idempotent.

Round t (model version t):
1. publish θ_g (retained MODEL payload, its values encoded as the `model_values` setting asks;
   θ_g itself stays float32 here) and pick a cohort of K online devices (seeded by
   (seed, t, attempt), so a restarted service picks the same devices);
2. send each its round command and collect updates until all answered or the deadline passed;
   an invited device fetches the retained model only when it does not hold version t (its
   birth says which version it holds; the service remembers the versions it invited it to
   fetch); the downlink is counted as the broker sends it, MQTT framing included
   (`mqtt.round_downlink`);
   every update is admitted (signature, round checks, norm bound) and journaled (fsync) before
   it counts (`admission.py`); the updates that arrived together are admitted together, with
   one fsync (group commit);
3. with a quorum, close the round: aggregate with the strategy, add the round to the session
   totals, write the checkpoint atomically, drop the journal, evaluate when due, report; without
   one, invite a fresh cohort (up to `max_attempts`, then keep trying);
4. record who answered, who was late, who was rejected and why (`rounds.RoundLedger`).
A restart resumes from the checkpoint and replays the open round's journal; devices asked again
for a round they already answered re-send the same update, which is counted once.

Devices are untrusted (brief section 2b). Every broker event is handled inside its own guard: what
it raises is logged with its reason and counted, and the loop goes on. Status and telemetry are
read by `inbound` (size, nesting and numbers checked before use); retained updates and telemetry
are ignored; one device's weight, update norm and step are bounded by `core.bounds`, whose norm
history is kept in the checkpoint (as is the server optimiser's state, core.serveropt); a round
that would make θ_g non-finite is refused.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from broker_service.core import fastcodec
from broker_service.core.bounds import InfluenceBounds, entry_budget, sample_budget
from broker_service.core.cohort import round_cohort, sample_cohort
from broker_service.core.fewshot import evaluate_on_episodes
from broker_service.core.hyperparams import settings_for
from broker_service.core.initialisation import initial_theta
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import ALGORITHMS, wire_command
from broker_service.core.streams import CURVE_EPISODES, named_stream
from broker_service.observe.logs import EventLog
from broker_service.observe.metrics import Fanout, InfluxSink, LineFileSink, Sink
from broker_service.observe.recorder import Recorder
from broker_service.server import checkpoint
from broker_service.server.admission import Admission, load_hmac_keys
from broker_service.server.config import ConfigError, ServiceConfig
from broker_service.server.inbound import kept_telemetry, read_status, read_telemetry
from broker_service.server.journal import Journal
from broker_service.server.mqtt import PUBACK_BYTES, Event, ServiceMqtt, round_downlink
from broker_service.server.presence import FleetView
from broker_service.server.rounds import Rejected, RoundLedger
from broker_service.server.signing import downlink_signer
from broker_service.server.statelock import StateLock
from broker_service.server.totals import Totals
from broker_service.usecases.registry import load_use_case
from device_agent import codec, reasons
from device_agent.energy import energy_mj, profile
from device_agent.topics import Topics, check_name

UPDATE_BATCH = 1024
"""Updates admitted together at most (journaled with one fsync, `admission.admit_many`)."""
LOGGED_REFUSALS = 5
"""Refused messages logged per device and round (all are counted): a device that floods the
service with bad messages cannot flood its log."""


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


class AggregationService:
    """Runs the rounds; `run()` returns when all rounds are done or `stop` is set. It holds the
    state directory's lock (statelock.py) from its creation (or takes over a standby's `lock`)
    to the end of `run()`: a second service on the same state is refused."""

    def __init__(
        self,
        cfg: ServiceConfig,
        log: EventLog | None = None,
        progress: Callable[[RoundReport], None] | None = None,
        stop: threading.Event | None = None,
        lock: StateLock | None = None,
    ) -> None:
        self.cfg = cfg
        self.lock = lock or StateLock(cfg.state_dir).acquire()
        self.log = log or EventLog()
        self.progress = progress
        self.stop = stop or threading.Event()
        self.use_case = load_use_case(cfg.use_case, cfg.data_dir, seed=cfg.seed)
        self.settings = settings_for(
            cfg.use_case, rounds=cfg.rounds, cohort=cfg.cohort, **cfg.settings
        )
        self.strategy = ALGORITHMS[cfg.algorithm](self.settings)
        try:
            codec.value_encoding(self.strategy.model_values())
        except codec.CodecError:
            raise ConfigError(
                "model_values must be one of %s, not %r"
                % (", ".join(codec.VALUE_NAMES), self.strategy.model_values())
            ) from None
        self.net = NumpyNet(self.use_case.spec)
        self.n = self.strategy.global_size(self.net)
        self.total_rounds = int(self.settings["rounds"])
        self.topics = Topics(cfg.prefix, cfg.fleet)
        self.state = Path(cfg.state_dir)
        self.fleet = FleetView()
        self.totals = Totals()
        self.telemetry: dict[str, dict] = {}
        self.refused: Counter[str] = Counter()
        self.refusals_logged: Counter[str] = Counter()
        self.arrived: list[tuple[str, bytes]] = []  # updates read, not yet admitted
        self.episodes = self.use_case.new_device_episodes(
            cfg.eval_devices, named_stream(cfg.seed, CURVE_EPISODES)
        )
        self.admission = Admission(
            load_hmac_keys(cfg.hmac_keys_file),
            InfluenceBounds.from_settings(self.settings, cfg.max_update_norm),
        )
        self.theta, self.round = self._resume()
        self.mqtt: ServiceMqtt | None = None
        self.ledger: RoundLedger | None = None
        self.previous_ledger: RoundLedger | None = None
        self.journal: Journal | None = None
        self.model_payload = b""
        self.held: dict[str, int] = {}  # the model version each device holds, as far as known
        self.round_down = 0  # bytes the broker sends the devices for the open round
        self.metric_initial: float | None = None
        self.metric_last: float | None = None
        self.sink = metrics_sink(cfg, self.log)
        self.signer = downlink_signer(cfg)  # signs keyed devices' commands (signing.py)
        self.last_heartbeat = -1e9
        self.recorder = Recorder(self.sink, cfg.fleet, cfg.use_case, cfg.algorithm)

    # -- state --

    def checkpoint_path(self) -> Path:
        """Where the session's checkpoint lives (in the state folder)."""
        return self.state / "checkpoint.json"

    def _resume(self) -> tuple[np.ndarray, int]:
        """θ_g and the round to start at: the checkpoint's (with its totals) when there is one,
        else round 0 from `init_checkpoint` or a seeded initialisation."""
        path = self.checkpoint_path()
        if not path.exists():
            if self.cfg.init_checkpoint:
                return self._initial_from(self.cfg.init_checkpoint), 0
            theta = initial_theta(self.net, self.cfg.seed)[: self.n]
            return theta, 0
        ckpt = checkpoint.load(path)
        self._check_resumable(ckpt, path)
        self.totals = Totals.from_dict(ckpt.extra.get("totals", {}))
        self.admission.bounds.restore(ckpt.extra.get("recent_norms", []))
        reference = ckpt.extra.get("reference_norm")
        if isinstance(reference, float) and math.isfinite(reference) and reference > 0:
            self.admission.bounds.reference = reference
        kept = self.strategy.restore_server_state(ckpt.server_state, self.n)
        if not kept and self.strategy.optimiser.moments:
            self.log(
                "server_state_reset",
                optimiser=self.strategy.optimiser.name,
                held=str(ckpt.server_state.get("optimiser")),
            )
        self.admission.bounds.trust.restore(ckpt.extra.get("trust", {}))
        self.log("resumed", round=ckpt.round, checkpoint=str(path))
        return ckpt.theta, ckpt.round

    def _check_resumable(self, ckpt: checkpoint.Checkpoint, path: Path) -> None:
        """Raise CheckpointError unless `ckpt` is of this service's use case and algorithm."""
        held = (ckpt.use_case, ckpt.algorithm, len(ckpt.theta))
        mine = (self.cfg.use_case, self.cfg.algorithm, self.n)
        if held != mine:
            raise checkpoint.CheckpointError(
                "%s holds %s/%s with %d parameters; this service runs %s/%s with %d"
                % ((path,) + held + mine)
            )

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
        """Write θ_g, the round and the totals to the checkpoint (atomically)."""
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
                "totals": self.totals.to_dict(),
                "recent_norms": self.admission.bounds.to_list(),
                "reference_norm": self.admission.bounds.reference,
                "trust": self.admission.bounds.trust.to_dict(),
            },
            server_state=self.strategy.server_state(),
        )
        checkpoint.save(self.checkpoint_path(), ckpt)

    # -- main loop --

    def run(self) -> dict:
        """Connect, run the remaining rounds, and return the session summary."""
        self.mqtt = ServiceMqtt(self.cfg, self.topics)
        self.mqtt.start()
        self.recorder.attach(self)
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
            self.lock.release()
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
        self.recorder.evaluation(values)
        return float(values.mean())

    def _wait_for_devices(self) -> None:
        """Wait (up to `wait_for_devices` s) until enough devices are online for a quorum."""
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
        """Publish θ_g as the retained MODEL payload of the current round, its values encoded
        as the strategy asks (`model_values`)."""
        self.model_payload = fastcodec.encode_model(
            self.theta, self.round, self.strategy.model_values()
        )
        assert self.mqtt is not None
        self.mqtt.publish(self.topics.model, self.model_payload, qos=1, retain=True)

    # -- one round --

    def _run_round(self) -> None:
        """Open the round, gather updates until a quorum answered, then close it."""
        start = time.monotonic()
        self._open_round()
        self._gather()
        if self.stop.is_set():
            return
        self._close(start)

    def _open_round(self) -> None:
        """Publish the model, start the round's ledger and journal, replay what a previous run
        of this round already accepted."""
        t = self.round
        self._publish_model()
        self.round_down = 0
        self.previous_ledger = self.ledger
        command = self.strategy.round_command(t, version=t)
        self.ledger = RoundLedger(
            t,
            t,
            self.n,
            self.cfg.max_payload,
            max_samples=sample_budget(command),
            max_entries=entry_budget(command, self.n),
        )
        self.admission.theta = self.theta
        self.journal = Journal(self.state / "journal", t)
        self._replay_journal()

    def _replay_journal(self) -> None:
        """Count the updates journaled for this round before a restart."""
        assert self.ledger is not None and self.journal is not None
        for device, payload in self.journal.replay():
            try:
                accepted = self.ledger.restore(device, payload)
                if accepted:  # its norm counts in the bounds' history, as before the restart
                    self.admission.bounds.remember(accepted.update)
                    self.log("replayed", round=self.round, device=device)
            except Rejected as exc:
                self.log("replay_skipped", round=self.round, device=device, reason=exc.reason)

    def _gather(self) -> None:
        """Invite cohorts and collect their updates until a quorum answered or the service is
        stopped."""
        ledger = self.ledger
        assert ledger is not None
        attempt = 0
        while not self.stop.is_set():
            self._invite(attempt)
            self._collect(time.monotonic() + self.cfg.round_timeout)
            if ledger.quorum_met(self.cfg.quorum, self.cfg.min_updates):
                return
            attempt += 1
            self._quorum_missed(attempt)

    def _quorum_missed(self, attempt: int) -> None:
        """Log a missed quorum; once `max_attempts` are used up, pause before the next one."""
        assert self.ledger is not None
        self.log(
            "quorum_missed",
            round=self.round,
            attempt=attempt,
            answered=len(self.ledger.accepted),
            invited=len(self.ledger.invited),
        )
        if attempt >= self.cfg.max_attempts:
            self._pump(min(5.0, self.cfg.round_timeout))

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

    def _send_commands(self, devices: Iterable[str]) -> None:
        """Send the round command to each device (signed for a device with a key), and count the
        bytes the broker sends it: the command, and the model when the device does not hold
        this version (it then subscribes, gets the retained model, and unsubscribes)."""
        assert self.mqtt is not None
        command = wire_command(self.strategy.round_command(self.round, version=self.round))
        for device in devices:
            payload = self.signer.command(
                device, command, self.round, self.round, self.model_payload
            )
            self.mqtt.publish(self.topics.command(device), payload, qos=1)
            fetch = self.held.get(device) != self.round
            self.held[device] = self.round
            self._count_down(
                round_downlink(
                    self.topics, device, len(payload), len(self.model_payload) if fetch else None
                )
            )

    def _count_down(self, size: int) -> None:
        """Add `size` bytes the broker sends a device to the round's and the session's downlink."""
        self.round_down += size
        self.totals.bytes_down += size

    def _collect(self, deadline: float) -> None:
        """Handle broker events until every invited device answered or `deadline` passed."""
        assert self.ledger is not None
        while self.ledger.has_waiting() and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._pump(min(left, 0.5))

    def _waiting_for(self) -> set[str]:
        """The devices the open round still waits for (none when no round is open)."""
        ledger = self.ledger
        if ledger is None or ledger.closed:
            return set()
        return ledger.waiting_for()

    # -- closing a round --

    def _close(self, start: float) -> None:
        """Close the round: aggregate, count, checkpoint, evaluate when due, report."""
        ledger = self.ledger
        assert ledger is not None
        late = ledger.close()
        beta = self.strategy.outer_step(self.round, self.total_rounds)
        clipped, downweighted = self._aggregate(ledger)
        ledger.rejected.update(self.refused)  # status, telemetry and other refused messages
        self.refused.clear()
        self.refusals_logged.clear()
        self._count(ledger)
        self.round += 1
        self._persist()
        metric = self._evaluate_if_due()
        report = self._round_report(ledger, late, beta, time.monotonic() - start, metric, clipped)
        report.downweighted = downweighted
        self._report(report)
        if self.round == self.total_rounds:
            self._publish_model()
        if self.progress:
            self.progress(report)

    def _aggregate(self, ledger: RoundLedger) -> tuple[list[str], list[str]]:
        """θ_g ← the strategy's meta-update with the round's accepted updates, clipped and
        weighed by their devices' trust (`core.bounds`, `core.trust`); returns the devices whose
        update was clipped and those whose update counted with a weight below 1. A step that
        would make θ_g non-finite, or that fails, is refused: θ_g stays, the round's updates
        are withdrawn and counted, the devices' trust is left as it was, and the session goes
        on."""
        bounds = self.admission.bounds
        devices = sorted(ledger.accepted)  # the order of ledger.updates()
        try:
            stepped = bounds.step(
                self.strategy, self.theta, ledger.updates(), self.round, self.total_rounds, devices
            )
        except Exception as exc:  # a round must not stop the service (nor loop on restart)
            self._refuse_round(ledger, reasons.INTERNAL_ERROR, _describe(exc))
            return [], []
        if stepped is None:
            self._refuse_round(ledger, reasons.NON_FINITE_MODEL, "θ_g would not be finite")
            return [], []
        self.theta = stepped
        if bounds.capped:  # colluders pushing one way look like this (docs/trust.md)
            self.log(
                "model_capped",
                round=self.round,
                limit="%.4g" % (bounds.growth * bounds.reference),
                devices=",".join(devices),
            )
        return (
            [devices[i] for i in bounds.clipped],
            [devices[i] for i in bounds.trust.downweighted],
        )

    def _refuse_round(self, ledger: RoundLedger, reason: str, detail: str) -> None:
        """Keep θ_g and withdraw the round's updates, each counted under `reason`."""
        devices = sorted(ledger.accepted)
        for device in devices:
            ledger.withdraw(device, reason)
        self.log(
            "round_refused",
            round=self.round,
            reason=reason,
            detail=detail,
            updates=",".join(devices),
        )

    def _count(self, ledger: RoundLedger) -> None:
        """Add the round's updates, bytes up, energy and rejections to the session totals."""
        self.totals.add_round(
            updates=len(ledger.accepted),
            bytes_up=ledger.bytes_up(),
            dense_bytes_up=len(ledger.accepted) * self._dense_update_bytes(),
            energy_mj=self._round_energy(ledger),
            rejected=ledger.rejected,
        )

    def _persist(self) -> None:
        """Checkpoint the round and drop its journal. On a storage error (e.g. disk full) the
        previous checkpoint and the journal stay, and the session goes on."""
        assert self.journal is not None
        try:
            self._save()
            self.journal.remove()
        except OSError as exc:
            self.log("checkpoint_failed", round=self.round, error=str(exc))

    def _evaluate_if_due(self) -> float | None:
        """The metric every `eval_every` rounds and after the last one, else None."""
        if self.round % max(1, self.cfg.eval_every) == 0 or self.round == self.total_rounds:
            self.metric_last = self.evaluate()
            return self.metric_last
        return None

    def _round_report(
        self,
        ledger: RoundLedger,
        late: list[str],
        beta: float,
        seconds: float,
        metric: float | None,
        clipped: list[str],
    ) -> RoundReport:
        """The figures of the round just closed (the service has moved on to the next)."""
        return RoundReport(
            round=self.round - 1,
            participants=sorted(ledger.accepted),
            late=late,
            rejected=dict(ledger.rejected),
            duplicates=ledger.duplicates,
            attempts=ledger.attempts,
            outer_step=beta,
            seconds=seconds,
            metric=metric,
            totals=self.totals,
            bytes_up=ledger.bytes_up(),
            bytes_down=self.round_down,
            clipped=clipped,
        )

    def _report(self, report: RoundReport) -> None:
        """Write the round's metric point and its `round_closed` log line."""
        losses = [
            float(self.telemetry[d]["loss_after"])
            for d in report.participants
            if isinstance(self.telemetry.get(d, {}).get("loss_after"), (int, float))
        ]
        self.recorder.round_closed(report, self._dense_update_bytes(), losses)
        self.log(
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

    def _dense_update_bytes(self) -> int:
        """The size of one dense float32 update of all parameters (the upload saving's basis)."""
        return codec.HEADER_SIZE + 4 * self.net.plan.n_params

    def _round_energy(self, ledger: RoundLedger) -> float:
        """The devices' energy for the round: as reported in their telemetry, else estimated
        from the bytes exchanged with the default board profile."""
        total = 0.0
        estimates: dict[int, float] = {}  # by update size: the same estimate for the same bytes
        for device in ledger.accepted:
            doc = self.telemetry.get(device, {})
            if doc.get("round") == ledger.round and isinstance(doc.get("energy_mj"), float):
                total += doc["energy_mj"]
            else:
                size = ledger.accepted[device].payload_bytes
                if size not in estimates:
                    estimates[size] = energy_mj(0, size, len(self.model_payload), profile())
                total += estimates[size]
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
        """Handle the broker events that arrive within `timeout` s (and all queued after)."""
        assert self.mqtt is not None
        self._heartbeat()
        event = self.mqtt.next_event(timeout)
        while event is not None:
            if event.kind != "message" or not event.topic.endswith("/update"):
                self._admit_arrived()  # what arrived before this event counts before it
            self._guarded(event)
            if len(self.arrived) >= UPDATE_BATCH:
                self._admit_arrived()
            event = self.mqtt.next_event(0)
        self._admit_arrived()

    def _guarded(self, event: Event) -> None:
        """Handle one event; whatever it raises is logged with its reason and counted, and the
        loop goes on: no message can stop the service."""
        try:
            self._handle(event)
        except Exception as exc:  # a device may send anything; the loop must go on
            device, leaf = self.topics.device_of(event.topic)
            self._refuse(device, leaf or event.kind, reasons.INTERNAL_ERROR, _describe(exc))

    def _refuse(self, device: str | None, what: str, reason: str, detail: str = "") -> None:
        """Count a refused message under `reason` (added to the open round's rejections when
        it closes) and log it, at most LOGGED_REFUSALS times per device and round."""
        self.refused[reason] += 1
        key = device or ""
        self.refusals_logged[key] += 1
        if self.refusals_logged[key] <= LOGGED_REFUSALS:
            self.log(
                "rejected",
                round=self.round,
                device=_printable(device or "-"),
                what=what,
                reason=reason,
                detail=_printable(detail),
            )

    def _handle(self, event: Event) -> None:
        """Dispatch one event of the broker connection."""
        if event.kind == "connected":
            self._on_connected()
        elif event.kind in ("disconnected", "refused"):
            self.log("broker_" + event.kind, round=self.round, reason=event.payload.decode())
        else:
            self._on_message(event)

    def _on_connected(self) -> None:
        """(Re)connected: publish the model again and re-ask the devices still awaited."""
        self.log("broker_connected", round=self.round)
        if self.model_payload:
            assert self.mqtt is not None
            self.mqtt.publish(self.topics.model, self.model_payload, qos=1, retain=True)
        self._send_commands(sorted(self._waiting_for()))

    def _on_message(self, event: Event) -> None:
        """Route a message of a device's subtree by its leaf topic; ignore anything else.
        A device id that breaks the topic rules is refused (no command could reach it), and so
        are retained updates and telemetry: only live ones count, and a retained one would be
        delivered again on every (re)subscription."""
        device, leaf = self.topics.device_of(event.topic)
        if device is None or leaf not in ("status", "update", "telemetry"):
            return
        try:
            check_name("device id", device)
        except ValueError as exc:
            self._refuse(device, leaf, reasons.BAD_DEVICE_ID, str(exc))
            return
        if event.retain and leaf != "status":
            self._refuse(device, leaf, reasons.RETAINED)
            return
        if leaf == "status":
            self._on_status(device, event.payload)
        elif leaf == "update":
            self._on_update(device, event.payload)
        else:
            self._on_telemetry(device, event.payload)

    def _on_status(self, device: str, payload: bytes) -> None:
        """Track presence; a device the open round waits for that comes back is asked again.
        A status the service cannot read counts as offline."""
        try:
            info = read_status(payload)
        except Rejected as exc:
            self._refuse(device, "status", exc.reason, exc.detail)
            info = {}
        held = info.get("model_version")
        if isinstance(held, int) and info.get("state") == "online":
            self.held[device] = held  # what its birth says it holds (it kept it across sessions)
        changed = self.fleet.apply(device, info)
        if changed is None:
            return
        self.log("presence", device=device, online=changed.online)
        self.recorder.presence(device, changed.online, changed.info)
        if changed.online and device in self._waiting_for():
            self._send_commands([device])  # back after a reboot: ask again now

    def _on_update(self, device: str, message: bytes) -> None:
        """Queue a device's update; `_admit_arrived` admits the queued ones together."""
        self.arrived.append((device, message))

    def _admit_arrived(self) -> None:
        """Admit the queued updates into the open round (journaled with one fsync) and log each
        outcome; none counts before they are durable."""
        arrived, self.arrived = self.arrived, []
        if not arrived:
            return
        ledger = self.ledger
        if ledger is None:
            for device, _ in arrived:
                self.totals.rejected[reasons.NO_OPEN_ROUND] += 1
                self.log("rejected", device=device, reason=reasons.NO_OPEN_ROUND)
            return
        assert self.journal is not None
        self._count_down(PUBACK_BYTES)  # the broker acknowledges every QoS 1 update
        try:
            outcomes = self.admission.admit_many(ledger, self.journal, arrived)
        except Exception as exc:  # no message can stop the service
            outcomes = [exc] * len(arrived)
        for (device, _), outcome in zip(arrived, outcomes, strict=True):
            if isinstance(outcome, Rejected):
                self._log_rejected(device, outcome.reason, outcome.detail)
            elif isinstance(outcome, OSError):  # the journal could not store it (disk full)
                self._log_rejected(device, reasons.STORAGE_ERROR, str(outcome))
            elif isinstance(outcome, Exception):
                self._refuse(device, "update", reasons.INTERNAL_ERROR, _describe(outcome))
            elif outcome is None:
                self.log("duplicate", round=self.round, device=device)
            else:
                samples = outcome.update.samples
                self.log(
                    "accepted",
                    round=self.round,
                    device=device,
                    bytes=outcome.payload_bytes,
                    nnz=outcome.nnz,
                    samples=samples,
                    claimed=outcome.claimed if outcome.claimed != samples else None,
                )

    def _log_rejected(self, device: str, reason: str, detail: str) -> None:
        """One `rejected` log line for an update of the open round (at most LOGGED_REFUSALS
        per device and round; the ledger counts them all)."""
        self.refusals_logged[device] += 1
        if self.refusals_logged[device] <= LOGGED_REFUSALS:
            self.log("rejected", round=self.round, device=device, reason=reason, detail=detail)

    def _on_telemetry(self, device: str, payload: bytes) -> None:
        """Keep the numbers of a device's latest telemetry (`inbound.read_telemetry`) and
        record them for the rounds it answered."""
        try:
            doc = read_telemetry(payload)
        except Rejected as exc:
            self._refuse(device, "telemetry", exc.reason, exc.detail)
            return
        self.telemetry[device] = kept_telemetry(doc)  # what closing a round reads
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
        """Where the line-protocol metrics are written."""
        return metrics_path(self.cfg)

    def summary(self) -> dict:
        """The session's figures (for the demo table and tests)."""
        t = self.totals.to_dict()
        return {
            "use_case": self.cfg.use_case,
            "algorithm": self.cfg.algorithm,
            "rounds": self.round,
            "metric": self.use_case.metric,
            "metric_initial": self.metric_initial,
            "metric_final": self.metric_last,
            "updates": t["updates"],
            "bytes_up": t["bytes_up"],
            "bytes_down": t["bytes_down"],
            "dense_bytes_up": t["dense_bytes_up"],
            "upload_saving": self.totals.upload_saving(),
            "energy_mj": t["energy_mj"],
            "rejected": t["rejected"],
            "checkpoint": str(self.checkpoint_path()),
            "metrics": str(self.metrics_path()),
        }


def _describe(exc: BaseException) -> str:
    """An exception as `Type: message`, for a log line."""
    return "%s: %s" % (type(exc).__name__, exc)


def _printable(text: str, limit: int = 200) -> str:
    """`text` on one line and at most `limit` characters: what a device sent must not forge
    log lines."""
    return " ".join(text.split())[:limit]
