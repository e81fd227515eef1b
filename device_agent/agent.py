"""The device agent: one device's MQTT session — models, commands, online rounds, uploads.

Single-threaded and allocation-conscious so it runs on a 256 KB MicroPython board:
- the model payload is kept as received and decoded straight into the parameter array;
- incoming messages are only checked (device_agent.validate) and stashed in the transport
  callback; rounds run in the main loop, polling the transport between samples, so a newer model
  or a cancel aborts a stale round cleanly (the next round reloads θ_g from the kept payload);
- anything malformed is rejected with a reason, logged, counted and reported in telemetry
  (device_agent.reports); the agent keeps its previous state; a message over its topic's size
  limit is skipped by the transport before it is read (`oversized`);
- with a key (`hmac_key`), a command counts only with the service's valid tag and not older
  than the newest verified (session epoch, model version, round), and a round trains only on a
  model whose SHA-256 is the one its verified command names; without a key the agent accepts
  unsigned commands as before (docs/security.md, "The device");
- the model is fetched on invitation only: the agent subscribes to the fleet's retained model
  topic when a round command names a model version (and, keyed, a digest) it does not hold, and
  unsubscribes once it holds it; a device outside the cohort, or one that already holds the
  round's model, receives no model at all (docs/protocol.md, "Fetching the model");
- a lost connection ends the session with an exception; device_agent.robust.RobustAgent runs the
  sessions and reconnects with back-off.
"""

from device_agent import codec, limits, reasons, reports, validate
from device_agent.auth import TAG_SIZE, digest, sign
from device_agent.clock import ticks_ms, ticks_since
from device_agent.model import Plan
from device_agent.network import Network
from device_agent.round import round_settings, run_round
from device_agent.specs import spec_for
from device_agent.topics import Topics
from device_agent.transport import UmqttTransport

FETCH_MS = 5000
"""How long a command waits for the model it names after the agent subscribed to the model
topic (the broker then sends the retained model); after that the round is refused."""


def make_transport(
    client_id, host, port=1883, user=None, password=None, keepalive=30, ssl=False, ca_file=None
):
    """The agent's transport: umqtt.simple where it exists (MicroPython), paho-mqtt otherwise
    (CPython). It is chosen here, not in device_agent.transport, because the paho transport
    builds on that module's interface."""
    try:
        import umqtt.simple  # noqa: F401
    except ImportError:  # CPython
        from device_agent.transport_paho import PahoTransport

        return PahoTransport(client_id, host, port, user, password, keepalive, ssl, ca_file)
    return UmqttTransport(client_id, host, port, user, password, keepalive, ssl, ca_file)


class RoundAborted(Exception):
    """Raised between samples when the round in progress became stale."""


def log(event, **fields):
    """One line an event: `agent event key=value ...`."""
    parts = ["agent", event]
    for key in sorted(fields):
        parts.append("%s=%s" % (key, fields[key]))
    print(" ".join(parts))


class _RoundSamples:
    """The data source seen by a round: polls the transport between samples and aborts."""

    def __init__(self, agent, source):
        self.agent = agent
        self.source = source
        self.heap_peak = reports.heap_used()

    def __iter__(self):
        return self

    def __next__(self):
        if self.agent.transport is not None:
            self.agent.transport.poll()
        if self.agent.abort_reason is not None:
            raise RoundAborted(self.agent.abort_reason)
        used = reports.heap_used()
        if used is not None and used > self.heap_peak:
            self.heap_peak = used
        return next(self.source)


class Agent:
    """One device and its sessions: `connect()`, `serve()`, `goodbye()`; `drop()` after a loss.

    RobustAgent(agent).run() is the usual way to run it. `round_runner(agent, command)`, when
    given, replaces the on-device round (a gateway or a simulated fleet may train with numpy); it
    returns an object shaped like RoundResult. Setting `stopping` makes `serve()` return at the
    next loop turn.
    """

    def __init__(
        self, config, source, transport_factory=make_transport, round_runner=None, logger=log
    ):
        self.cfg = config
        self.device_id = config["device_id"]
        self.topics = Topics(config["prefix"], config["fleet"])
        self.plan = Plan(config["spec"] or spec_for(config["use_case"]))
        self.net = Network(self.plan)
        self.params = codec.zeros(self.plan.n_params)
        # error feedback (a round setting, on by default) keeps a residual of len(θ_g) between
        # rounds: made here, with the other long-lived arrays, rather than in the middle of the
        # first round's heap
        self.residual = codec.zeros(self.plan.n_global)
        self.residual_round = None  # the round that last updated the residual
        self.source = source
        self.transport_factory = transport_factory
        self.transport = None
        self.model_buf = None
        self.model_header = None
        self.pending = None
        self.pending_bytes = 0
        self.abort_reason = None
        self.in_round = 0
        self.last_done = None
        self.last_update = None
        self.rounds_done = 0
        self.rejected = {}
        self.bytes_in = 0
        self.connects = 0
        self.stopping = False
        self.hmac_key = bytes.fromhex(config["hmac_key"]) if config.get("hmac_key") else None
        self.model_digest = None  # SHA-256 of the held model (keyed agents)
        self.newest = None  # (epoch, version, round) of the newest verified command
        self.newest_digest = None  # (version, digest) the newest verified round command names
        self.pending_digest = None  # the digest the pending command names
        self.fetch_start = None  # when the agent subscribed to the model topic for a command
        self.fetch_ms = FETCH_MS
        self.model_subscribed = False  # subscribed to the model topic in this session
        self.round_runner = round_runner
        self.log = logger

    # -- incoming messages (called from the transport; check and stash only) --

    def on_message(self, topic, payload):
        """Route a message: the fleet model or this device's command topic. Never raises."""
        self.bytes_in += len(payload)
        try:
            if topic == self.topics.model:
                self._on_model(payload)
            elif topic == self.topics.command(self.device_id):
                self._on_command(payload)
        except Exception as exc:  # noqa: BLE001 - a bad message must not end the session
            self.reject("message", reasons.INTERNAL_ERROR, repr(exc))

    def on_oversized(self, topic, size):
        """The transport skipped a message of `size` bytes over its topic's limit unread."""
        self.bytes_in += size
        what = "message"
        if topic == self.topics.model:
            what = "model"
        elif topic == self.topics.command(self.device_id):
            what = "command"
        self.reject(what, reasons.OVERSIZED, "%d bytes" % size)

    def size_limits(self):
        """{topic: largest payload read}: the largest legal model, and a signed command."""
        model = validate.model_limit(self.plan, self.cfg["max_model_bytes"])
        command = limits.MAX_COMMAND + (TAG_SIZE if self.hmac_key else 0)
        return {self.topics.model: model, self.topics.command(self.device_id): command}

    def reject(self, what, reason, detail=""):
        """Count and log a rejected message; the agent keeps its state."""
        key = what + ":" + reason
        self.rejected[key] = self.rejected.get(key, 0) + 1
        self.log("rejected", what=what, reason=reason, detail=detail)

    def _on_model(self, payload):
        held = self.model_header
        try:
            h = validate.check_model(payload, self.plan, self.cfg["max_model_bytes"])
            sha = self._check_keyed_model(payload, h)
        except validate.Refused as exc:
            self.reject("model", exc.reason, exc.detail)
            return
        if held is not None and h.model_version == held.model_version:
            if sha is None or sha == self.model_digest:
                return  # a redelivery
        elif held is not None and h.model_version < held.model_version:
            self.log("model_reset", version=h.model_version)  # a new session on the fleet
        self.model_buf = payload
        self.model_header = h
        self.model_digest = sha
        self.log("model", version=h.model_version, n=h.n, bytes=len(payload))
        if self.in_round:
            self.abort_reason = reasons.ABORT_NEWER_MODEL

    def _check_keyed_model(self, payload, h):
        """A keyed agent's model checks: the SHA-256 of an acceptable model (None unkeyed).

        ROLLBACK: older than the newest verified command. BAD_DIGEST: of the version the newest
        verified round command names, with another digest.
        """
        if self.hmac_key is None:
            return None
        validate.check_model_fresh(h, self.newest)
        sha = digest(payload)
        if self.newest_digest is not None and self.newest_digest[0] == h.model_version:
            validate.check_digest(self.newest_digest[1], sha)
        return sha

    def _on_command(self, message):
        try:
            payload = validate.check_signature(message, self.hmac_key)
            cmd = validate.check_command(payload)
            sha = self._check_keyed_command(cmd)
        except validate.Refused as exc:
            self.reject("command", exc.reason, exc.detail)
            return
        if cmd.get("cancel"):
            if self.in_round == cmd["round"] + 1:
                self.abort_reason = reasons.ABORT_CANCELLED
            if self.pending is not None and self.pending["round"] == cmd["round"]:
                self.pending = None
            return
        self.pending = cmd
        self.pending_bytes = len(message)
        self.pending_digest = sha
        self.fetch_start = None
        if self.in_round and cmd["round"] + 1 != self.in_round:
            self.abort_reason = reasons.ABORT_SUPERSEDED

    def _check_keyed_command(self, cmd):
        """A keyed agent's command checks: the model digest a verified command names (None for
        a cancel, or unkeyed). ROLLBACK: ordered before the newest verified command; otherwise
        this command becomes the newest."""
        if self.hmac_key is None:
            return None
        sha = validate.check_signed_fields(cmd)
        order = validate.command_order(cmd)
        validate.check_fresh(order, self.newest)
        self.newest = order
        if sha is not None:
            self.newest_digest = (cmd["version"], sha)
        return sha

    # -- rounds --

    def model_version(self):
        """The version of the model held, or -1."""
        return -1 if self.model_header is None else self.model_header.model_version

    def run_pending(self):
        """Run the stashed command, if any: load θ_g, train, upload, report."""
        cmd = self.pending
        if cmd is None:
            return
        if (cmd["round"], cmd["version"]) == self.last_done and self.last_update is not None:
            self.pending = None
            self._publish(self.topics.update(self.device_id), self.last_update, qos=1)
            self.log("resent", round=cmd["round"])
            return
        if self._awaiting_model(cmd):
            return
        self.pending = None
        settings = round_settings(cmd)
        try:
            validate.check_round(cmd, settings, self.model_header, self.plan)
            if self.pending_digest is not None:
                validate.check_digest(self.pending_digest, self.model_digest)
        except validate.Refused as exc:
            self.reject("command", exc.reason, exc.detail)
            if exc.reason in (reasons.STALE_VERSION, reasons.BAD_DIGEST):
                self._telemetry(reports.round_status(cmd, "error", exc.reason))
            return
        self._train(cmd, settings)

    def holds_model(self, cmd):
        """True when the held model is the one `cmd` names: its version and, for a verified
        command of a keyed agent, its SHA-256."""
        h = self.model_header
        if h is None or h.model_version != cmd["version"]:
            return False
        return self.pending_digest is None or self.model_digest == self.pending_digest

    def _awaiting_model(self, cmd):
        """True while the pending command `cmd` waits for the model it names (fetch on invitation).

        The first time, the agent subscribes to the model topic, so the broker sends the
        retained model (a subscription made again re-sends it too: a model refused as a rollback
        because it opened a newer service session, or one that arrived before its command); it
        then waits up to `fetch_ms`. Once the model is held, or the wait is over, the agent
        unsubscribes: no later model reaches it until its next invitation.
        """
        if self.transport is None or self.holds_model(cmd):
            self._end_fetch()
            return False
        if self.fetch_start is None:
            self.fetch_start = ticks_ms()
            self.log("fetch", version=cmd["version"])
            self.transport.subscribe(self.topics.model)
            self.model_subscribed = True
            return True
        if ticks_since(self.fetch_start) < self.fetch_ms:
            return True
        self._end_fetch()
        return False

    def _end_fetch(self):
        """Leave the model topic after a fetch (the broker then sends this device no model)."""
        self.fetch_start = None
        if self.model_subscribed and self.transport is not None:
            self.model_subscribed = False
            self.transport.unsubscribe(self.topics.model)

    def _train(self, cmd, settings):
        h = self.model_header
        assert h is not None and self.model_buf is not None
        codec.decode_values(self.model_buf, h, codec.HEADER_SIZE, self.params, 0)  # θ_g, in place
        residual = None
        if settings["error_feedback"]:
            if self.residual is None or len(self.residual) != h.n:
                self.residual = None  # its memory is free for the new one
                self.residual = codec.zeros(h.n)
                self.residual_round = None
            residual = self.residual
        samples = _RoundSamples(self, self.source)
        self.in_round = cmd["round"] + 1
        self.abort_reason = None
        self.log("training", round=cmd["round"], version=cmd["version"])  # a round is under way
        bytes_down = len(self.model_buf) + self.pending_bytes
        start = ticks_ms()
        try:
            if self.round_runner is not None:
                result = self.round_runner(self, cmd)
            else:
                result = run_round(
                    self.net, self.params, samples, cmd, residual, self.residual_round
                )
            if residual is not None:
                self.residual_round = cmd["round"]
        except RoundAborted as exc:
            self.log("aborted", round=cmd["round"], reason=exc.args[0])
            self._telemetry(reports.round_status(cmd, "aborted", exc.args[0]))
            return
        finally:
            self.in_round = 0
            self.abort_reason = None
        self._upload(cmd, result, ticks_since(start), samples.heap_peak, bytes_down)

    def _upload(self, cmd, result, compute_ms, heap_peak, bytes_down):
        """Publish a finished round's update (signed when keyed), remember it, and report it in
        telemetry every `telemetry_every` rounds."""
        message = result.payload
        if self.hmac_key:
            message = sign(self.hmac_key, message)
        self._publish(self.topics.update(self.device_id), message, qos=1)
        self.last_done = (cmd["round"], cmd["version"])
        self.last_update = message
        self.rounds_done += 1
        every = self.cfg["telemetry_every"]
        if every and self.rounds_done % every == 0:
            profile = self.cfg["energy_profile"]
            self._telemetry(
                reports.round_done(
                    cmd, result, compute_ms, heap_peak, bytes_down, profile, self.rejected
                )
            )
        up = len(result.payload)
        self.log("round", round=cmd["round"], samples=result.samples, ms=compute_ms, bytes=up)

    def _publish(self, topic, payload, qos=0, retain=False):
        if self.transport is None:
            raise OSError("not connected")
        self.transport.publish(topic, payload, retain, qos)

    def _telemetry(self, doc):
        self._publish(
            self.topics.telemetry(self.device_id), reports.telemetry(self.device_id, doc), qos=0
        )

    # -- sessions --

    def connect(self):
        """Open a session: last will, subscriptions, then the retained birth."""
        b = self.cfg["broker"]
        args = [b["host"], b["port"], b["user"], b["password"], b["keepalive"], b["ssl"]]
        if b.get("ca_file"):
            args.append(b["ca_file"])
        t = self.transport_factory(self.device_id, *args)
        t.on_message = self.on_message
        t.on_oversized = self.on_oversized
        t.limits = self.size_limits()
        status = self.topics.status(self.device_id)
        t.connect(status, reports.offline(self.device_id))
        self.transport = t
        self.model_subscribed = False
        self.fetch_start = None
        t.subscribe(self.topics.command(self.device_id))  # the model: on invitation only
        birth = reports.birth(
            self.device_id,
            self.cfg["board"],
            self.cfg["use_case"],
            self.plan,
            self.model_version(),
            self.cfg.get("battery"),
            self.cfg["energy_profile"],
        )
        t.publish(status, birth, True, 1)  # birth last: commands can now reach us
        self.connects += 1
        self.log("connected", broker="%s:%s" % (b["host"], b["port"]), session=self.connects)

    def serve(self, max_rounds=None):
        """Work until max_rounds rounds are done (forever when None); raises OSError on loss."""
        while (max_rounds is None or self.rounds_done < max_rounds) and not self.stopping:
            self.run_pending()
            if max_rounds is not None and self.rounds_done >= max_rounds:
                break
            if self.transport is None:
                raise OSError("not connected")
            self.transport.wait(100)

    def goodbye(self):
        """Publish the retained offline status and disconnect."""
        try:
            self._publish(
                self.topics.status(self.device_id), reports.offline(self.device_id), 1, True
            )
        except OSError:
            pass
        if self.transport is not None:
            self.transport.close()

    def drop(self):
        """Forget a broken session: close the transport, leave any round."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.in_round = 0
