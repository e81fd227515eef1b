"""The agent of one training wake (device_agent.wake): the Agent, its state kept in flash.

`WakeAgent` is device_agent.agent.Agent with what deep sleep needs around it: at start it
restores the held model, the residual and the rollback floor from the flash state
(device_agent.state); it verifies its work order with the Agent's own command checks (signature,
not older than the newest verified) and trains with the Agent's round (the model fetched on
invitation, the digest checked), on the samples of the sensor ring (device_agent.ring); and it
writes its state once per wake. `run_wake()` follows docs/protocol.md ("Asynchronous sessions",
a device's training wake, steps 1-4).
"""

import json
import sys

from device_agent import state as flash
from device_agent.agent import Agent
from device_agent.auth import digest, sign
from device_agent.clock import sleep_ms, ticks_ms, ticks_since
from device_agent.ring import Ring
from device_agent.round import effective_split, round_settings

WAIT_STEP_MS = 20
"""How long a training wake waits for the broker at a time while it waits for a message."""


def forget_module(name):
    """Let the collector take a module used once before the wake trains: an import stays in
    sys.modules and in its package for good (the sleep block's checker, device_agent.wakeconfig:
    about 0.7 KB of a training wake's heap on a Cortex-M7 board)."""
    sys.modules.pop(name, None)
    package, _, leaf = name.rpartition(".")
    parent = sys.modules.get(package)
    if parent is not None and hasattr(parent, leaf):
        try:
            delattr(parent, leaf)
        except (AttributeError, TypeError):  # a frozen package's attributes are read-only
            pass


forget_module("device_agent.wakeconfig")  # the config was checked before the wake got here


def needed_samples(plan, settings):
    """The samples a round of these settings streams: reconstruction (when it splits) and
    adaptation."""
    recon = int(settings["recon_samples"]) if effective_split(plan, settings["split"]) else 0
    return recon + int(settings["adapt_samples"])


def asleep_status(device_id, wake_s, sense_s=None):
    """The retained presence of a device gone to sleep until its next training wake, with its
    sensor wakes' period when it has one (the service projects its battery with both)."""
    doc = {"state": "asleep", "device": device_id, "wake_s": wake_s}
    if sense_s is not None:
        doc["sense_s"] = sense_s
    return json.dumps(doc)


class WakeAgent(Agent):
    """The agent of one training wake; `run_wake()` runs it and returns the exit status.

    `options` go to Agent (transport_factory, logger).
    """

    def __init__(self, cfg, **options):
        Agent.__init__(self, cfg, None, **options)
        self.sleep = cfg["sleep"]
        self.ring = Ring(self.sleep["ring_file"], self.plan, self.sleep["ring"])
        if self.ring.reset is not None:
            self.log("ring_reset", reason=self.ring.reset)
        st, why = flash.load(self.sleep["state"], self.plan, cfg["max_model_bytes"], self.residual)
        if why is not None:
            self.log("state_fresh", reason=why)
        self.st = st
        self.restore(st)
        self.written = False
        self.tried = False
        self.bytes_out = 0
        self.report = {}

    def restore(self, st):
        """The agent's long-lived fields from the flash state (the state gives up its model: save()
        writes the agent's)."""
        if st.model is not None:
            self.model_buf = st.model
            self.model_header = st.header
            if self.hmac_key is not None:
                self.model_digest = digest(st.model)
            st.model = st.header = None  # the agent's now: a model fetched later frees it
        if st.residual is not None:
            self.residual = st.residual
        self.residual_round = st.residual_round
        self.newest = st.newest

    def save(self):
        """The wake's one state write (later calls do nothing): the agent's fields now."""
        if self.written:
            return
        st = self.st
        st.model = self.model_buf
        st.residual = self.residual
        st.residual_round = self.residual_round
        st.newest = self.newest
        if self.transport is not None:  # the telemetry this wake sends reports these
            self.report["wakes"] = st.wakes - st.reported_wakes
            self.report["sensor_wakes"] = self.ring.wakes - st.reported_sensor
            st.reported_wakes = st.wakes
            st.reported_sensor = self.ring.wakes
        self.written = True
        flash.save(self.sleep["state"], st)
        self.log("saved", wake=st.wakes, update=st.update is not None)

    def order(self):
        """The verified work order the agent holds, or None."""
        cmd = self.pending
        return cmd if cmd is not None and cmd.get("async") else None

    def receipted(self):
        """True when the work order held receipts the unacknowledged update."""
        cmd = self.order()
        return cmd is not None and cmd.get("receipt", -1) >= self.st.update_version

    def wait_for(self, ready, ms):
        """Poll the broker until `ready()` or `ms` milliseconds passed; returns ready()."""
        start = ticks_ms()
        while not ready() and ticks_since(start) < ms:
            self._wait()
        return ready()

    def _wait(self):
        if self.transport is None:
            raise OSError("not connected")
        self.transport.wait(WAIT_STEP_MS)

    def check_receipt(self):
        """Step 1: drop the unacknowledged update once the work order's receipt reaches it."""
        st = self.st
        if st.update is not None and self.receipted():
            reason = self.order().get("receipt_reason", "journalled")
            self.log("receipt", version=st.update_version, reason=reason)
            st.update = None

    def session_changed(self, cmd):
        """A work order for a version older than the device's kept update or its last trained
        one comes from a new session (its versions start again; a keyed device verified that it
        is newer by its epoch): what the device kept for the old one is dropped, and it may
        train again."""
        st = self.st
        version = cmd["version"]
        if st.update is not None and version < st.update_version:
            self.log("session_changed", dropped=st.update_version, version=version)
            st.update = None
        if st.last_trained is not None and version < st.last_trained:
            st.last_trained = None

    def act(self, cmd):
        """Steps 1-3 for the verified work order `cmd`."""
        st = self.st
        self.session_changed(cmd)
        self.check_receipt()
        if st.update is not None:  # step 2: the same bytes again (from flash), no training
            message = flash.update_bytes(st)
            self._publish(self.topics.update(self.device_id), message, qos=1)
            self.bytes_out += len(message)
            self.report["resent"] = st.update_version
            self.log("resent", version=st.update_version, bytes=len(st.update))
            return
        version = cmd["version"]
        if not cmd.get("want"):
            self.log("idle", why="not_wanted", version=version)
            return
        if st.last_trained is not None and version <= st.last_trained:
            self.log("idle", why="trained", version=version)
            return
        need = needed_samples(self.plan, round_settings(cmd))
        have = self.ring.available(st.ring_seen)
        if have < need:
            self.log("idle", why="samples", have=have, need=need)
            return
        self.source = self.ring.samples(st.ring_seen)  # step 3: the Agent's round on the ring
        try:
            while self.pending is not None and not self.tried:
                self.run_pending()  # fetches the model when not held, then trains
                if self.pending is not None and not self.tried:
                    self._wait()
        finally:
            self.source.close()

    def _train(self, cmd, settings):
        self.tried = True
        Agent._train(self, cmd, settings)

    def _upload(self, cmd, result, compute_ms, heap_peak, bytes_down):
        """A finished round: the state written with the update unacknowledged, then the update
        published."""
        message = result.payload
        if self.hmac_key:
            message = sign(self.hmac_key, message)
        st = self.st
        st.update = message
        st.update_version = cmd["version"]
        st.last_trained = cmd["version"]
        st.ring_seen = self.ring.appended
        report = self.report
        report["round"] = cmd["round"]
        report["version"] = cmd["version"]
        report["samples"] = result.samples
        report["compute_ms"] = compute_ms
        report["loss_before"] = result.recon_loss or result.adapt_loss_first
        report["loss_after"] = result.adapt_loss_last
        self.save()
        if self.sleep["halt_after_write"]:
            self.log("halted", version=cmd["version"])
            while True:  # a test kills the process here: after the write, before the send
                sleep_ms(1000)
        self._publish(self.topics.update(self.device_id), message, qos=1)
        self.bytes_out += len(message)
        self.rounds_done += 1
        self.log("trained", version=cmd["version"], samples=result.samples, ms=compute_ms)

    def run_wake(self):
        """Steps 1-4 of a training wake; returns the exit status (0, or 1: no session)."""
        start = ticks_ms()
        st = self.st
        st.wakes += 1
        self.log("wake", kind="train", wake=st.wakes)
        try:
            self.connect()
            if self.wait_for(self.order, self.sleep["order_ms"]):
                self.act(self.order())
            else:
                self.log("no_order", waited_ms=self.sleep["order_ms"])
            if st.update is not None and self.bytes_out:  # step 4: the receipt, briefly
                self.wait_for(self.receipted, self.sleep["receipt_ms"])
                self.check_receipt()
            self.save()
            self._wake_telemetry(start)
            wake_s = self.sleep["train_every_s"]
            status = asleep_status(self.device_id, wake_s, self.sleep["sense_every_s"])
            self._publish(self.topics.status(self.device_id), status, 1, True)
            self.log("asleep", wake_s=wake_s, ms=ticks_since(start))
            self.drop()  # a clean disconnect: no last will
            return 0
        except Exception as exc:  # noqa: BLE001 - the wake ends; its state is kept
            self.log("disconnected", error=repr(exc))
            self.drop()
            self.save()
            return 1

    def _wake_telemetry(self, start):
        """What this wake measured, on the telemetry topic (QoS 0)."""
        doc = self.report
        doc["wake"] = self.st.wakes
        doc["bytes_sent"] = self.bytes_out
        doc["bytes_received"] = self.bytes_in
        doc["wake_ms"] = ticks_since(start)
        if self.rejected:
            doc["rejected"] = self.rejected
        self._telemetry(doc)
