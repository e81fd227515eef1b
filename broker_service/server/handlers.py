"""What happens to each event of the broker connection: the aggregation service's inbound side.

`MessageHandlers._pump` takes the events the broker client queued and hands each to its handler:
(re)connection, presence (`status`), updates and telemetry. Updates are queued as they are read
and admitted together (`Admission.admit_many`: signature, round checks, norm bound, journal with
one fsync) before any other kind of event, and at most UPDATE_BATCH at a time; none counts
before it is durable.

Devices are untrusted (brief section 2b). Every event is handled inside its own guard
(`_guarded`): what it raises is logged with its reason and counted, and the loop goes on.
Status and telemetry are read by `inbound` (size, nesting and numbers checked before use);
retained updates and telemetry are refused, and so is a device id that breaks the topic rules.
Each refused message is counted under its reason (`device_agent.reasons`) and added to the open
round's rejections when it closes; at most LOGGED_REFUSALS of them are logged per device and
round, so a device that floods the service cannot flood its log.

The handlers are a mixin of `service.AggregationService`, whose state they read and change (the
attributes declared below): they run inside its round loop, one event at a time, and a handler
can be replaced on one service instance (the tests do) without touching the others.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from broker_service.observe.logs import EventLog
from broker_service.observe.recorder import Recorder
from broker_service.server.admission import Admission
from broker_service.server.inbound import kept_telemetry, read_status, read_telemetry
from broker_service.server.journal import Journal
from broker_service.server.mqtt import PUBACK_BYTES, Event, ServiceMqtt
from broker_service.server.presence import FleetView
from broker_service.server.reporting import Heartbeat
from broker_service.server.rounds import Accepted, Rejected, RoundLedger
from broker_service.server.totals import Totals
from device_agent import reasons
from device_agent.topics import Topics, check_name

if TYPE_CHECKING:
    from collections.abc import Iterable

UPDATE_BATCH = 1024
"""Updates admitted together at most (journaled with one fsync, `admission.admit_many`)."""
LOGGED_REFUSALS = 5
"""Refused messages logged per device and round (all are counted): a device that floods the
service with bad messages cannot flood its log."""


def describe(exc: BaseException) -> str:
    """An exception as `Type: message`, for a log line."""
    return "%s: %s" % (type(exc).__name__, exc)


def printable(text: str, limit: int = 200) -> str:
    """`text` on one line and at most `limit` characters: what a device sent must not forge
    log lines."""
    return " ".join(text.split())[:limit]


class MessageHandlers:
    """The handlers of the broker's events, mixed into `AggregationService`."""

    # The service's state the handlers read and change (`AggregationService.__init__` sets it).
    log: EventLog
    round: int
    topics: Topics
    mqtt: ServiceMqtt | None
    fleet: FleetView
    admission: Admission
    ledger: RoundLedger | None  # the open round's (None before the first one opens)
    previous_ledger: RoundLedger | None  # the round closed before it (late telemetry)
    journal: Journal | None
    totals: Totals
    recorder: Recorder
    heartbeat: Heartbeat
    model_payload: bytes
    held: dict[str, int]  # the model version each device holds, as far as known
    telemetry: dict[str, dict]  # each device's latest telemetry, checked
    refused: Counter[str]  # refused messages of the open round, by reason
    refusals_logged: Counter[str]  # refusals logged in the open round, by device
    arrived: list[tuple[str, bytes]]  # updates read, not yet admitted

    if TYPE_CHECKING:  # the round loop's (service.py)

        def _send_commands(self, devices: Iterable[str]) -> None: ...

        def _count_down(self, size: int) -> None: ...

    # -- the event pump --

    def _pump(self, timeout: float) -> None:
        """Handle the broker events that arrive within `timeout` s (and all queued after)."""
        assert self.mqtt is not None
        self.heartbeat.beat(self.round)
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
            self._refuse(device, leaf or event.kind, reasons.INTERNAL_ERROR, describe(exc))

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

    def _waiting_for(self) -> set[str]:
        """The devices the open round still waits for (none when no round is open): those a
        reconnection or a device's return asks again."""
        ledger = self.ledger
        if ledger is None or ledger.closed:
            return set()
        return ledger.waiting_for()

    # -- presence and telemetry --

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
            self.held[device] = held  # what its birth says it holds (it kept it across restarts)
        changed = self.fleet.apply(device, info)
        if changed is None:
            return
        self.log("presence", device=device, online=changed.online, asleep=changed.asleep or None)
        self.recorder.presence(device, changed.online, changed.info)
        if changed.online and device in self._waiting_for():
            self._send_commands([device])  # back after a reboot: ask again now

    def _on_telemetry(self, device: str, payload: bytes) -> None:
        """Keep the numbers of a device's latest telemetry (`inbound.read_telemetry`) and
        record them for the rounds it answered."""
        try:
            doc = read_telemetry(payload)
        except Rejected as exc:
            self._refuse(device, "telemetry", exc.reason, exc.detail)
            return
        self.telemetry[device] = kept_telemetry(doc)  # what closing a round reads
        self.recorder.device_telemetry(device, doc)  # a battery's projection: every wake counts
        for ledger in (self.ledger, self.previous_ledger):
            entry = ledger.answered(device, doc.get("round")) if ledger is not None else None
            if entry is not None:
                self.recorder.device_update(device, entry.round, doc, entry.payload_bytes)

    # -- updates --

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
            self._log_outcome(device, outcome)

    def _log_outcome(self, device: str, outcome: Accepted | Exception | None) -> None:
        """Log what admission made of one update: accepted, a duplicate, or refused (and why);
        an error that is not a refusal is counted as the service's own."""
        if isinstance(outcome, Rejected):
            self._log_rejected(device, outcome.reason, outcome.detail)
        elif isinstance(outcome, OSError):  # the journal could not store it (disk full)
            self._log_rejected(device, reasons.STORAGE_ERROR, str(outcome))
        elif isinstance(outcome, Exception):
            self._refuse(device, "update", reasons.INTERNAL_ERROR, describe(outcome))
        elif outcome is None:
            self.log("duplicate", round=self.round, device=device)
        else:
            self._log_accepted(device, outcome)

    def _log_accepted(self, device: str, outcome: Accepted, **extra: object) -> None:
        """The `accepted` log line of an update (`extra` fields after the device's id)."""
        samples = outcome.update.samples
        self.log(
            "accepted",
            round=self.round,
            device=device,
            **extra,
            bytes=outcome.payload_bytes,
            nnz=outcome.nnz,
            samples=samples,
            claimed=outcome.claimed if outcome.claimed != samples else None,
        )

    # -- refusals --

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
                device=printable(device or "-"),
                what=what,
                reason=reason,
                detail=printable(detail),
            )

    def _log_rejected(self, device: str, reason: str, detail: str) -> None:
        """One `rejected` log line for an update of the open round (at most LOGGED_REFUSALS
        per device and round; the ledger counts them all)."""
        self.refusals_logged[device] += 1
        if self.refusals_logged[device] <= LOGGED_REFUSALS:
            self.log("rejected", round=self.round, device=device, reason=reason, detail=detail)

    def _settle_refusals(self, ledger: RoundLedger) -> None:
        """Add the messages refused while `ledger`'s round was open to its rejections, and
        start counting and logging afresh for the next round."""
        ledger.rejected.update(self.refused)  # status, telemetry and other refused messages
        self.refused.clear()
        self.refusals_logged.clear()
