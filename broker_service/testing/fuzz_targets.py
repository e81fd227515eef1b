"""Fuzz targets shared by the tests (hypothesis) and benchmarks/fuzz.py (atheris).

An input is one byte choosing the target (`data[0] % len(TARGETS)`) and the bytes fed to it.
Every target returns ACCEPTED or REJECTED, and raises for a bug: an exception other than the
codec's CodecError or the ledger's Rejected, a rejection reason outside device_agent.reasons, an
accepted value that breaks its invariants, a model changed by an invalid update, or a message
the agent could only count as `internal_error` (its handler raised).
"""

from __future__ import annotations

import json

import numpy as np

from broker_service.core.aggregate import meta_update
from broker_service.server.presence import FleetView
from broker_service.server.rounds import Rejected, RoundLedger
from device_agent import codec, reasons
from device_agent.agent import Agent
from device_agent.config import make_config
from device_agent.model import Plan
from device_agent.specs import spec_for

ACCEPTED = "accepted"
REJECTED = "rejected"

TARGETS = (
    "codec.decode",
    "codec.decode_command",
    "RoundLedger.offer",
    "Agent.on_message(model)",
    "Agent.on_message(command)",
    "FleetView.update",
)
"""The targets, in the order of the selector byte."""

DECODE, DECODE_COMMAND, LEDGER, AGENT_MODEL, AGENT_COMMAND, FLEET = range(len(TARGETS))

N = 64  # the round ledger's model size
AGENT_USE_CASE = "occupancy"  # the smallest default model: a full model payload of ~1.5 KB
ROUND = VERSION = 3  # the round the ledger has open, on this model version

DELTA_F16 = bytes(
    codec.encode(
        codec.KIND_DELTA, N, [1, 5, 63], [0.5, -1.0, 2.0], VERSION, ROUND, 10, codec.VALUE_F16
    )
)
DELTA_INT8_BITMAP = bytes(
    codec.encode(
        codec.KIND_DELTA,
        N,
        list(range(0, N, 2)),
        [0.1] * 32,
        VERSION,
        ROUND,
        10,
        codec.VALUE_INT8,
        codec.INDEX_BITMAP,
    )
)
SMALL_MODEL = bytes(codec.encode(codec.KIND_MODEL, 4, None, [1.0, 2.0, 3.0, 4.0], 2, 2))
COMMAND = bytes(codec.encode_command({"round": ROUND, "version": VERSION, "top_p": 10.0}, 3, 3))
AGENT_N = Plan(spec_for(AGENT_USE_CASE)).n_global
AGENT_MODEL_SEED = bytes(
    codec.encode(
        codec.KIND_MODEL, AGENT_N, None, [0.01 * (i % 7) for i in range(AGENT_N)], VERSION, VERSION
    )
)
STATUS = json.dumps({"state": "online", "device": "fuzz", "model_version": VERSION}).encode()

SEEDS = [DELTA_F16, DELTA_INT8_BITMAP, SMALL_MODEL, COMMAND, AGENT_MODEL_SEED, STATUS]
"""Valid messages of every kind: the corpus that the fuzzers mutate and feed to every target."""

VALID = [
    (DECODE, DELTA_F16),
    (DECODE, DELTA_INT8_BITMAP),
    (DECODE, SMALL_MODEL),
    (DECODE, AGENT_MODEL_SEED),
    (DECODE_COMMAND, COMMAND),
    (LEDGER, DELTA_F16),
    (LEDGER, DELTA_INT8_BITMAP),
    (AGENT_MODEL, AGENT_MODEL_SEED),
    (AGENT_COMMAND, COMMAND),
    (FLEET, STATUS),
]
"""(target, seed) pairs the target must accept."""


class Targets:
    """The decoders, the round ledger, the agent's message handling and the fleet's presence
    view, fed arbitrary bytes; `run` returns ACCEPTED or REJECTED and raises for a bug.

    `reason` holds the last rejection's reason (None after an acceptance, and for presence,
    which has no reasons).
    """

    def __init__(self):
        self.agent_log: list[tuple[str, dict]] = []
        self.agent = Agent(
            make_config({"device_id": "fuzz", "use_case": AGENT_USE_CASE}),
            iter(()),
            logger=lambda event, **fields: self.agent_log.append((event, fields)),
        )
        self.fleet = FleetView()
        self.theta = np.zeros(N, dtype=np.float32)
        self.count = 0
        self.reason: str | None = None

    def run(self, data: bytes) -> str:
        """Dispatch on the first byte; ACCEPTED or REJECTED, or an AssertionError for a bug."""
        self.count += 1
        self.reason = None
        if not data:
            return REJECTED  # no target chosen
        which, body = data[0] % len(TARGETS), data[1:]
        if which == DECODE:
            return self._decode(body)
        if which == DECODE_COMMAND:
            return self._decode_command(body)
        if which == LEDGER:
            return self._ledger(body)
        if which == AGENT_MODEL:
            return self._agent(self.agent.topics.model, body)
        if which == AGENT_COMMAND:
            return self._agent(self.agent.topics.command("fuzz"), body)
        return self._fleet(body)

    def _rejected(self, reason: str) -> str:
        """Record a rejection, which must name one of the documented reasons."""
        assert reason in reasons.REJECTIONS, "undocumented rejection reason %r" % reason
        self.reason = reason
        return REJECTED

    def _decode(self, body: bytes) -> str:
        try:
            h, idx, values = codec.decode(body)
        except codec.CodecError as exc:
            return self._rejected(exc.reason)
        assert len(idx) == len(values) == h.k <= h.n
        assert all(idx[i] < idx[i + 1] for i in range(len(idx) - 1))
        assert all(np.isfinite(values))
        return ACCEPTED

    def _decode_command(self, body: bytes) -> str:
        try:
            _, command = codec.decode_command(body)
        except codec.CodecError as exc:
            return self._rejected(exc.reason)
        assert isinstance(command, dict)
        return ACCEPTED

    def _ledger(self, body: bytes) -> str:
        ledger = RoundLedger(ROUND, VERSION, N, max_norm=1e6)
        ledger.invite(["fuzz"])
        before = self.theta.copy()
        try:
            entry = ledger.offer("fuzz", body)
        except Rejected as exc:
            assert not ledger.accepted
            return self._rejected(exc.reason)
        assert entry is not None and np.all(entry.update.indices < N)
        after = meta_update(self.theta, ledger.updates(), 0.5)
        assert np.all(np.isfinite(after))
        np.testing.assert_array_equal(self.theta, before)
        return ACCEPTED

    def _agent(self, topic: str, body: bytes) -> str:
        """Feed one message to the agent; its `rejected` counters say whether it refused it."""
        agent = self.agent
        held = agent.model_header
        counted = dict(agent.rejected)
        del self.agent_log[:]
        agent.on_message(topic, body)  # never raises: failures are counted as rejections
        agent.pending = None
        new = [key for key in agent.rejected if agent.rejected[key] != counted.get(key, 0)]
        h = agent.model_header
        if new:
            assert len(new) == 1 and sum(agent.rejected.values()) == sum(counted.values()) + 1
            reason = new[0].split(":", 1)[1]
            detail = "; ".join(str(f.get("detail")) for e, f in self.agent_log if e == "rejected")
            assert reason != reasons.INTERNAL_ERROR, "the agent's handler raised: %s" % detail
            assert h is held, "a rejected message changed the agent's model"
            return self._rejected(reason)
        if h is not held:
            assert h is not None and h.n in (agent.plan.n_global, agent.plan.n_params)
        return ACCEPTED

    def _fleet(self, body: bytes) -> str:
        """Presence has no rejection: a status it cannot read counts as offline, without info."""
        self.fleet.update("fuzz", body)
        state = self.fleet.devices["fuzz"]
        assert isinstance(state.online, bool) and isinstance(state.info, dict)
        if not state.info:
            assert not state.online
            return REJECTED
        return ACCEPTED
