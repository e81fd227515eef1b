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

Devices are untrusted (brief section 2b): one device's weight, update norm and step are bounded
by `core.bounds`, whose norm history is kept in the checkpoint (as is the server optimiser's
state, core.serveropt); a round that would make θ_g non-finite is refused.

The service is read in four rooms:
- this module: `AggregationService`, its wiring (`__init__`) and its round loop (open, invite,
  gather, close, `run`);
- `handlers.py`: what happens to each event of the broker connection (updates, presence,
  telemetry, refusals and their counting and logging), mixed into the service;
- `reporting.py`: round reports, metric points, evaluation, the summary, the heartbeat;
- `resume.py`: what the checkpoint holds and how a restarted service takes it back;
- `buffered.py`: the asynchronous session (`mode = "async"`), a subclass whose loop takes
  buffered steps instead of rounds (its bookkeeping in `steps.py`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from broker_service.core import fastcodec
from broker_service.core.bounds import InfluenceBounds, entry_budget, sample_budget
from broker_service.core.cohort import round_cohort, sample_cohort
from broker_service.core.hyperparams import settings_for
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import ALGORITHMS, Strategy, wire_command
from broker_service.core.streams import CURVE_EPISODES, named_stream
from broker_service.observe.logs import EventLog
from broker_service.observe.recorder import Recorder
from broker_service.server import checkpoint, reporting, resume
from broker_service.server.admission import Admission, load_hmac_keys
from broker_service.server.config import ConfigError, ServiceConfig, session_options
from broker_service.server.handlers import MessageHandlers, describe
from broker_service.server.journal import Journal
from broker_service.server.mqtt import ServiceMqtt, round_downlink
from broker_service.server.presence import FleetView
from broker_service.server.reporting import Heartbeat, RoundReport
from broker_service.server.rounds import RoundLedger
from broker_service.server.signing import downlink_signer
from broker_service.server.statelock import StateLock
from broker_service.server.totals import Totals
from broker_service.usecases.registry import load_use_case
from device_agent import codec, reasons
from device_agent.topics import Topics

__all__ = ["AggregationService", "RoundReport"]


class AggregationService(MessageHandlers):
    """Runs the rounds; `run()` returns when all rounds are done or `stop` is set. It holds the
    state directory's lock (statelock.py) from its creation (or takes over a standby's `lock`)
    to the end of `run()`: a second service on the same state is refused. The handlers of the
    broker's events are its `MessageHandlers` (handlers.py)."""

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
        self.settings = settings_for(cfg.use_case, **{**cfg.settings, **session_options(cfg)})
        self.strategy: Strategy = ALGORITHMS[cfg.algorithm](self.settings)
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
            int(self.settings["eval_devices"]), named_stream(cfg.seed, CURVE_EPISODES)
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
        self.sink = reporting.metrics_sink(cfg, self.log)
        self.signer = downlink_signer(cfg)  # signs keyed devices' commands (signing.py)
        self.heartbeat = Heartbeat(self.state / "heartbeat")
        self.recorder = Recorder(self.sink, cfg.fleet, cfg.use_case, cfg.algorithm)

    # -- state --

    def checkpoint_path(self) -> Path:
        """Where the session's checkpoint lives (in the state folder)."""
        return self.state / "checkpoint.json"

    def metrics_path(self) -> Path:
        """Where the line-protocol metrics are written."""
        return reporting.metrics_path(self.cfg)

    def _resume(self) -> tuple[np.ndarray, int]:
        """θ_g and the round to start at: the checkpoint's (with its totals; its other
        `extra` fields kept in `saved_extra`) when there is one, else round 0 from
        `init_checkpoint` or a seeded initialisation."""
        path = self.checkpoint_path()
        self.saved_extra: dict = {}
        if not path.exists():
            theta = resume.round_zero_theta(
                self.cfg, self.net, self.n, self.use_case.spec, self.log
            )
            return theta, 0
        ckpt = checkpoint.load(path)
        resume.check_resumable(ckpt, path, self.cfg, self.n)
        self.totals = resume.restore_state(
            ckpt, self.admission.bounds, self.strategy, self.n, self.log
        )
        self.saved_extra = ckpt.extra
        self.log("resumed", round=ckpt.round, checkpoint=str(path))
        return ckpt.theta, ckpt.round

    def _save(self) -> None:
        """Write θ_g, the round and the totals to the checkpoint (atomically)."""
        checkpoint.save(self.checkpoint_path(), resume.checkpoint_of(self))

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
        return reporting.evaluate(
            self.net,
            self.theta,
            self.strategy.split,
            self.episodes,
            self.settings,
            self.use_case.metric,
            self.recorder,
        )

    def summary(self) -> dict:
        """The session's figures (for the demo table and tests)."""
        return reporting.summary_of(self)

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
        resume.replay_journal(self.ledger, self.journal, self.admission.bounds, self.log)

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

    # -- closing a round --

    def _close(self, start: float) -> None:
        """Close the round: aggregate, count, checkpoint, evaluate when due, report."""
        ledger = self.ledger
        assert ledger is not None
        late = ledger.close()
        beta = self.strategy.outer_step(self.round, self.total_rounds)
        clipped, downweighted = self._aggregate(ledger)
        self._settle_refusals(ledger)
        dense = reporting.dense_update_bytes(self.net)
        reporting.count_round(self.totals, ledger, self.telemetry, dense, len(self.model_payload))
        self.round += 1
        self._persist()
        metric = self._evaluate_if_due()
        seconds = time.monotonic() - start
        report = reporting.round_report(
            ledger, late, beta, seconds, metric, self.totals, self.round_down
        )
        report.clipped, report.downweighted = clipped, downweighted
        reporting.record_round(self.log, self.recorder, report, self.telemetry, dense)
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
        devices = ledger.devices()  # the order of ledger.updates()
        try:
            stepped = bounds.step(
                self.strategy, self.theta, ledger.updates(), self.round, self.total_rounds, devices
            )
        except Exception as exc:  # a round must not stop the service (nor loop on restart)
            self._refuse_round(ledger, reasons.INTERNAL_ERROR, describe(exc))
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
        devices = ledger.devices()
        for device in devices:
            ledger.withdraw(device, reason)
        self.log(
            "round_refused",
            round=self.round,
            reason=reason,
            detail=detail,
            updates=",".join(devices),
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
        if reporting.evaluation_due(
            self.round, self.total_rounds, int(self.settings["eval_every"])
        ):
            self.metric_last = self.evaluate()
            return self.metric_last
        return None
