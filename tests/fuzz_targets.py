"""Fuzz targets shared by tests/test_fuzz.py (hypothesis) and benchmarks/fuzz.py (atheris).

Every target takes arbitrary bytes and must either accept valid input or reject it with a
reason; anything else (an exception escaping, a model changed by an invalid update) is a bug.
"""

from __future__ import annotations

import numpy as np

from broker_service.core.aggregate import meta_update
from broker_service.server.presence import FleetView
from broker_service.server.rounds import Rejected, RoundLedger
from device_agent import codec
from device_agent.agent import Agent
from device_agent.config import make_config

N = 64
SEEDS = [
    bytes(
        codec.encode(codec.KIND_DELTA, N, [1, 5, 63], [0.5, -1.0, 2.0], 3, 3, 10, codec.VALUE_F16)
    ),
    bytes(
        codec.encode(
            codec.KIND_DELTA,
            N,
            list(range(0, N, 2)),
            [0.1] * 32,
            3,
            3,
            10,
            codec.VALUE_INT8,
            codec.INDEX_BITMAP,
        )
    ),
    bytes(codec.encode(codec.KIND_MODEL, 4, None, [1.0, 2.0, 3.0, 4.0], 2, 2)),
    bytes(codec.encode_command({"round": 3, "version": 3, "top_p": 10.0}, 3, 3)),
]


class Targets:
    """The decoders, the round ledger and the agent's message handling, fed arbitrary bytes."""

    def __init__(self):
        self.agent = Agent(
            make_config({"device_id": "fuzz", "use_case": "occupancy"}),
            iter(()),
            logger=lambda *a, **k: None,
        )
        self.fleet = FleetView()
        self.theta = np.zeros(N, dtype=np.float32)
        self.count = 0

    def run(self, data: bytes) -> None:
        """Dispatch on the first byte; raises AssertionError only for a real bug."""
        self.count += 1
        if not data:
            return
        which, body = data[0] % 5, data[1:]
        if which == 0:
            self._decode(body)
        elif which == 1:
            try:
                codec.decode_command(body)
            except codec.CodecError as exc:
                assert exc.reason
        elif which == 2:
            self._ledger(body)
        elif which == 3:
            self._agent(body)
        else:
            self.fleet.update("fuzz", body)

    def _decode(self, body: bytes) -> None:
        try:
            h, idx, values = codec.decode(body)
        except codec.CodecError as exc:
            assert exc.reason
            return
        assert len(idx) == len(values) == h.k <= h.n
        assert all(idx[i] < idx[i + 1] for i in range(len(idx) - 1))
        assert all(np.isfinite(values))

    def _ledger(self, body: bytes) -> None:
        ledger = RoundLedger(3, 3, N, max_norm=1e6)
        ledger.invite(["fuzz"])
        before = self.theta.copy()
        try:
            entry = ledger.offer("fuzz", body)
        except Rejected as exc:
            assert exc.reason
            assert not ledger.accepted
            return
        assert entry is not None and np.all(entry.update.indices < N)
        after = meta_update(self.theta, ledger.updates(), 0.5)
        assert np.all(np.isfinite(after))
        np.testing.assert_array_equal(self.theta, before)

    def _agent(self, body: bytes) -> None:
        held = self.agent.model_header
        topic = self.agent.topics.model if len(body) % 2 else self.agent.topics.command("fuzz")
        self.agent.on_message(topic, body)  # never raises
        h = self.agent.model_header
        if h is not held and h is not None:
            assert h.n in (self.agent.plan.n_global, self.agent.plan.n_params)
        self.agent.pending = None
