"""The aggregation service of an asynchronous session (`mode = "async"`, docs/protocol.md,
"Asynchronous sessions"): buffered steps instead of invited rounds (FedBuff).

Step t (model version t):
1. publish θ_g (the retained MODEL of version t) and each known device's retained work order:
   the round command of version t with `async`, `want` and the device's receipt (signed for a
   keyed device, `signing.DownlinkSigner`); replay what the step's journal already holds;
2. collect updates computed on any version v ≤ t: each is admitted as a round's update is
   (`admission.Admission`: signature, checks, norm bound, journal with group commit) into the
   step's buffer (`steps.StepBuffer`), with staleness s = t − v and weight (1 + s)^−power;
   once the journal has it, the device's work order is republished with its new receipt, and
   so it is for a repeat and for an update refused for good (with the reason);
3. when the buffer holds `buffer` updates, or `step_timeout` passed with at least
   `min_updates`, take the step: θ_g moves by the strategy through the influence bounds and
   trust (β counts steps), the checkpoint keeps θ_g, t + 1, the receipts and the accepted
   (device, version) pairs of the last max_staleness + 1 versions, the journal is dropped;
4. after the last step the work orders say `want: false`.
A restarted service (or a standby that took over) resumes from the checkpoint, replays the open
step's journal and republishes every work order with its receipt.

Known devices: those listed in the keys file when updates are signed (the only ones whose
updates can count), else every device that published a status (online or asleep) or had an
update accepted. The downlink is counted as the broker sends it: a work order when it reaches
a device that is online (else the latest one, once, when the device next shows up), and the
model when a device's update shows it fetched a version it did not hold.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt

from broker_service.core.bounds import entry_budget, sample_budget
from broker_service.core.strategies import wire_command
from broker_service.observe.logs import EventLog
from broker_service.server import checkpoint, reporting, resume
from broker_service.server.config import ServiceConfig, check_async_options
from broker_service.server.journal import Journal
from broker_service.server.mqtt import PUBACK_BYTES, model_fetch_downlink, publish_size
from broker_service.server.reporting import RoundReport
from broker_service.server.rounds import Accepted
from broker_service.server.service import AggregationService
from broker_service.server.statelock import StateLock
from broker_service.server.steps import AcceptedPairs, Receipts, Refused, StepBuffer, step_due
from device_agent import reasons

__all__ = ["AsyncService", "service_for"]

FINISH_SECONDS = 10.0
"""How long the service waits at the end for the broker to have the last work orders."""


class AsyncService(AggregationService):
    """Runs an asynchronous session's steps; `run()` returns when all `rounds` steps are taken
    or `stop` is set. Everything else (state lock, handlers, reporting, evaluation) is the
    invited-rounds service's."""

    def __init__(
        self,
        cfg: ServiceConfig,
        log: EventLog | None = None,
        progress: Callable[[RoundReport], None] | None = None,
        stop: threading.Event | None = None,
        lock: StateLock | None = None,
    ) -> None:
        check_async_options(cfg)
        super().__init__(cfg, log, progress, stop, lock)
        self.buffer_size = cfg.buffer or max(1, self.strategy.cohort_size())
        self.receipts = Receipts.from_dict(self.saved_extra.get("receipts"))
        self.seen = AcceptedPairs.from_list(self.saved_extra.get("accepted"))
        keys = self.admission.hmac_keys
        self.allowed: set[str] | None = set(keys) if keys is not None else None
        self.known: set[str] = set(keys or ()) | set(self.receipts.latest)
        self.unsent: dict[str, int] = {}  # a sleeping device's latest work order, not yet sent
        self.want = True

    # -- state --

    def _save(self) -> None:
        """The invited-rounds checkpoint plus the session's mode, receipts and accepted pairs."""
        ckpt = resume.checkpoint_of(self)
        ckpt.extra.update(
            mode="async", receipts=self.receipts.to_dict(), accepted=self.seen.to_list()
        )
        checkpoint.save(self.checkpoint_path(), ckpt)

    # -- main loop --

    def _wait_for_devices(self) -> None:
        """Let the fleet's retained presence arrive (sleeping devices are never all online)."""
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle and not self.stop.is_set():
            self._pump(settle - time.monotonic())
        self.log("fleet", online=len(self.fleet.online()), asleep=len(self.fleet.asleep()))

    def _run_round(self) -> None:
        """Open step t, collect updates until it is due, then take it."""
        start = time.monotonic()
        self._open_step()
        self._collect_step(start)
        if self.stop.is_set():
            return
        self._take_step(start)

    def _open_step(self) -> None:
        """Publish the model, start the step's buffer and journal, replay what an earlier run
        journaled for it, and publish every known device's work order."""
        t, cfg = self.round, self.cfg
        self._publish_model()
        self.round_down = 0
        self.previous_ledger = self.ledger
        command = self.strategy.round_command(t, version=t)
        self.seen.prune(t, cfg.max_staleness)
        self.ledger = buffer = StepBuffer(
            t,
            self.n,
            self.seen,
            cfg.max_staleness,
            cfg.staleness_power,
            cfg.max_payload,
            max_samples=sample_budget(command),
            max_entries=entry_budget(command, self.n),
        )
        self.admission.theta = self.theta
        self.journal = Journal(self.state / "journal", t)
        resume.replay_journal(buffer, self.journal, self.admission.bounds, self.log)
        for entry in buffer.entries():
            self.receipts.record(entry.device, entry.round)
        self.log("step_open", round=t, buffered=buffer.count(), known=len(self.known))
        self._publish_orders(sorted(self.known))

    def _collect_step(self, start: float) -> None:
        """Handle broker events until the step is due (`steps.step_due`) or the service is
        stopped."""
        buffer = self._buffer()
        cfg = self.cfg
        while not self.stop.is_set():
            elapsed = time.monotonic() - start
            count = buffer.count()
            if step_due(count, self.buffer_size, elapsed, cfg.step_timeout, cfg.min_updates):
                return
            left = cfg.step_timeout - elapsed
            self._pump(min(0.5, left) if left > 0 else 0.5)

    def _take_step(self, start: float) -> None:
        """Aggregate the buffer, count, checkpoint, evaluate when due, report; after the last
        step publish the final model and work orders that want nothing more."""
        buffer = self._buffer()
        buffer.close()
        beta = self.strategy.outer_step(self.round, self.total_rounds)
        clipped, downweighted = self._aggregate(buffer)
        self._settle_refusals(buffer)
        dense = reporting.dense_update_bytes(self.net)
        reporting.count_round(self.totals, buffer, self.telemetry, dense, len(self.model_payload))
        self.log(
            "step_taken",
            round=self.round,
            updates=buffer.count(),
            staleness="%.2f" % buffer.mean_staleness() if buffer.count() else None,
            beta="%.4g" % beta,
        )
        self.round += 1
        self.seen.prune(self.round, self.cfg.max_staleness)
        self._persist()
        metric = self._evaluate_if_due()
        seconds = time.monotonic() - start
        report = reporting.round_report(buffer, [], beta, seconds, metric, self.totals, 0)
        report.participants = buffer.devices()
        report.clipped, report.downweighted = clipped, downweighted
        if self.round == self.total_rounds:
            self._finish()
        report.bytes_down = self.round_down
        reporting.record_round(self.log, self.recorder, report, self.telemetry, dense)
        if self.progress:
            self.progress(report)

    def _finish(self) -> None:
        """The last step is taken: publish the final model and work orders with want=false,
        and wait (up to FINISH_SECONDS) until the broker has them before the service leaves."""
        self._publish_model()
        self.want = False
        last = self._publish_orders(sorted(self.known))
        if last is not None:
            with contextlib.suppress(RuntimeError, ValueError):  # not connected: sent on return
                last.wait_for_publish(FINISH_SECONDS)

    def _buffer(self) -> StepBuffer:
        """The open step's buffer."""
        buffer = self.ledger
        assert isinstance(buffer, StepBuffer)
        return buffer

    # -- work orders --

    def _publish_orders(
        self, devices: Iterable[str], awake: bool = False
    ) -> mqtt.MQTTMessageInfo | None:
        """Publish each device's retained work order of the current version: the round command
        with `async`, `want` and the device's receipt, signed for a keyed device (`awake`: the
        devices are connected, waiting for their receipts)."""
        assert self.mqtt is not None
        t, sent = self.round, None
        order = wire_command(self.strategy.round_command(t, version=t))
        order.update({"async": True, "want": self.want})
        for device in devices:
            command = {**order, **self.receipts.fields(device)}
            payload = self.signer.command(device, command, t, t, self.model_payload)
            topic = self.topics.command(device)
            sent = self.mqtt.publish(topic, payload, qos=1, retain=True)
            self._count_order(device, publish_size(topic, len(payload)), awake)
        return sent

    def _count_order(self, device: str, size: int, awake: bool) -> None:
        """Count a work order the broker sends `device` now (it is awake or online), or keep
        it as the one it gets when it next wakes (a retained message replaces the one
        before)."""
        state = self.fleet.devices.get(device)
        if awake or (state is not None and state.online):
            self._count_down(size)
            self.unsent.pop(device, None)
        else:
            self.unsent[device] = size

    def _woke(self, device: str) -> None:
        """`device` is awake: the broker has sent it its latest work order."""
        size = self.unsent.pop(device, None)
        if size is not None:
            self._count_down(size)

    def _fetched(self, device: str, version: int) -> None:
        """Count the model download of a device whose update was computed on a `version` it
        did not hold before."""
        if self.held.get(device) != version:
            self.held[device] = version
            self._count_down(model_fetch_downlink(self.topics, len(self.model_payload)))

    def _know(self, device: str) -> bool:
        """Make `device` known (when it may be); True when it was not known before."""
        if device in self.known or (self.allowed is not None and device not in self.allowed):
            return False
        self.known.add(device)
        return True

    # -- broker events --

    def _waiting_for(self) -> set[str]:
        """Nobody is waited for: devices come when they choose."""
        return set()

    def _on_connected(self) -> None:
        """(Re)connected: publish the model and every work order again (a broker that lost
        its retained messages gets them back)."""
        self.log("broker_connected", round=self.round)
        if self.model_payload:
            assert self.mqtt is not None
            self.mqtt.publish(self.topics.model, self.model_payload, qos=1, retain=True)
            self._publish_orders(sorted(self.known))

    def _on_status(self, device: str, payload: bytes) -> None:
        """Track presence; a device that publishes a status (online or asleep) becomes known
        and gets its work order; one that is online has received its latest order."""
        super()._on_status(device, payload)
        state = self.fleet.devices.get(device)
        if state is None or not (state.online or state.asleep):
            return
        if state.online:
            self._woke(device)
        if self._know(device) and self.model_payload:
            self._publish_orders([device])

    def _admit_arrived(self) -> None:
        """Admit the queued updates into the open step's buffer (journaled with one fsync),
        then receipt each: its device's work order is published again."""
        arrived, self.arrived = self.arrived, []
        if not arrived:
            return
        if not isinstance(self.ledger, StepBuffer) or self.ledger.closed:
            for device, _ in arrived:
                self.totals.rejected[reasons.NO_OPEN_ROUND] += 1
                self.log("rejected", device=device, reason=reasons.NO_OPEN_ROUND)
            return
        assert self.journal is not None
        self._count_down(PUBACK_BYTES * len(arrived))  # the broker acknowledges each update
        try:
            outcomes = self.admission.admit_many(self.ledger, self.journal, arrived)
        except Exception as exc:  # no message can stop the service
            outcomes = [exc] * len(arrived)
        receipted = {d for (d, _), o in zip(arrived, outcomes, strict=True) if self._receipt(d, o)}
        self._publish_orders(sorted(receipted), awake=True)

    def _receipt(self, device: str, outcome: Accepted | Exception | None) -> bool:
        """Log what admission made of one update and record its receipt; True when its
        device's work order is to be published again: accepted (journaled), a repeat, or
        refused for good, each only after its signature was checked."""
        if isinstance(outcome, Accepted):
            self.receipts.record(device, outcome.round)
            staleness = self.round - outcome.round
            weight = "%.3g" % outcome.update.weight
            self._log_accepted(
                device, outcome, version=outcome.round, staleness=staleness, weight=weight
            )
            self._fetched(device, outcome.round)
        elif outcome is None:
            self.log("duplicate", round=self.round, device=device)
        else:
            self._log_outcome(device, outcome)
            if not isinstance(outcome, Refused):
                return False
            self.receipts.record(device, outcome.version, outcome.reason)
        self._know(device)
        self._woke(device)
        return device in self.known


def service_for(
    cfg: ServiceConfig, log: EventLog | None = None, lock: StateLock | None = None
) -> AggregationService:
    """The service of `cfg`'s mode: invited rounds, or an asynchronous session."""
    if cfg.mode == "async":
        return AsyncService(cfg, log, lock=lock)
    return AggregationService(cfg, log, lock=lock)
