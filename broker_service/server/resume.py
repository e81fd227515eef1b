"""What the aggregation service keeps in its checkpoint, and how it starts again from it.

After every round the service writes θ_g, the round and what the next round depends on: the
running totals, the influence bounds' norm history and reference length, the devices' trust and
the server optimiser's state (`checkpoint_of`). A restarted service takes all of it back
(`restore_state`), after checking that the checkpoint is of its own use case, algorithm and
model size (`check_resumable`); without a checkpoint it starts at round 0 from `init_checkpoint`
or a seeded initialisation (`round_zero_theta`), and the open round's journal gives back the
updates accepted before the restart (`replay_journal`). The file format is `checkpoint.py`'s.

Saving and resuming sit side by side so that what is written and what is read back can be
compared at a glance.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from broker_service.core.bounds import InfluenceBounds
from broker_service.core.initialisation import initial_theta
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import Strategy
from broker_service.observe.logs import EventLog
from broker_service.server import checkpoint
from broker_service.server.admission import Admission
from broker_service.server.config import ConfigError, ServiceConfig
from broker_service.server.journal import Journal
from broker_service.server.rounds import Rejected, RoundLedger
from broker_service.server.totals import Totals
from broker_service.usecases.base import UseCase


def round_zero_theta(
    cfg: ServiceConfig, net: NumpyNet, n: int, spec: dict[str, Any], log: EventLog
) -> np.ndarray:
    """θ_g when there is no checkpoint yet: that of `init_checkpoint` when it is set
    (its model must be `spec`'s), else the seeded initialisation of the `n` global parameters."""
    if cfg.init_checkpoint:
        return initial_from(cfg.init_checkpoint, cfg.use_case, n, spec, log)
    return initial_theta(net, cfg.seed)[:n]


def initial_from(
    path: str, use_case: str, n: int, spec: dict[str, Any], log: EventLog
) -> np.ndarray:
    """θ_g from a checkpoint of the same architecture as `use_case`'s model `spec` (e.g.
    `tinymetafed init --from-onnx`); ConfigError for another model or fewer than `n` values."""
    ckpt = checkpoint.load(path)
    mine = {k: spec.get(k) for k in ("input", "layers")}
    theirs = {k: ckpt.spec.get(k) for k in ("input", "layers")}
    if mine != theirs or len(ckpt.theta) < n:
        raise ConfigError(
            "init_checkpoint %s has another architecture than the %s model" % (path, use_case)
        )
    log("initialised", checkpoint=path)
    return np.asarray(ckpt.theta[:n], dtype=np.float32)


def check_resumable(ckpt: checkpoint.Checkpoint, path: Path, cfg: ServiceConfig, n: int) -> None:
    """Raise CheckpointError unless `ckpt` (read from `path`) holds `cfg`'s use case and
    algorithm with `n` global parameters, of a session in `cfg`'s mode (a checkpoint without
    a mode is of invited rounds)."""
    held = (ckpt.use_case, ckpt.algorithm, len(ckpt.theta))
    mine = (cfg.use_case, cfg.algorithm, n)
    if held != mine:
        raise checkpoint.CheckpointError(
            "%s holds %s/%s with %d parameters; this service runs %s/%s with %d"
            % ((path,) + held + mine)
        )
    mode = ckpt.extra.get("mode", "rounds")
    if mode != cfg.mode:
        raise checkpoint.CheckpointError(
            "%s holds a session of mode %s; this service runs mode %s" % (path, mode, cfg.mode)
        )


def restore_state(
    ckpt: checkpoint.Checkpoint,
    bounds: InfluenceBounds,
    strategy: Strategy,
    n: int,
    log: EventLog,
) -> Totals:
    """Take back what the rounds after `ckpt` depend on: the norm history, reference length
    and device trust into `bounds`, the server optimiser's state into `strategy` (a fresh one,
    logged, when it does not fit a θ_g of `n` values); returns the running totals."""
    totals = Totals.from_dict(ckpt.extra.get("totals", {}))
    bounds.restore(ckpt.extra.get("recent_norms", []))
    reference = ckpt.extra.get("reference_norm")
    if isinstance(reference, float) and math.isfinite(reference) and reference > 0:
        bounds.reference = reference
    kept = strategy.restore_server_state(ckpt.server_state, n)
    if not kept and strategy.optimiser.moments:
        log(
            "server_state_reset",
            optimiser=strategy.optimiser.name,
            held=str(ckpt.server_state.get("optimiser")),
        )
    bounds.trust.restore(ckpt.extra.get("trust", {}))
    return totals


class SavedState(Protocol):
    """What `checkpoint_of` reads from the service (`service.AggregationService`)."""

    cfg: ServiceConfig
    use_case: UseCase
    settings: dict[str, Any]
    strategy: Strategy
    admission: Admission
    theta: np.ndarray
    round: int
    totals: Totals


def checkpoint_of(service: SavedState) -> checkpoint.Checkpoint:
    """The checkpoint of the service at its current round: θ_g, the settings and what
    `restore_state` takes back (totals, the bounds' history and trust, the server
    optimiser's state)."""
    cfg, bounds = service.cfg, service.admission.bounds
    return checkpoint.Checkpoint(
        spec=service.use_case.spec,
        theta=service.theta,
        round=service.round,
        algorithm=cfg.algorithm,
        use_case=cfg.use_case,
        settings=service.settings,
        split=service.strategy.split,
        extra={
            "seed": cfg.seed,
            "preprocessing": service.use_case.preprocessing,
            "totals": service.totals.to_dict(),
            "recent_norms": bounds.to_list(),
            "reference_norm": bounds.reference,
            "trust": bounds.trust.to_dict(),
        },
        server_state=service.strategy.server_state(),
    )


def replay_journal(
    ledger: RoundLedger, journal: Journal, bounds: InfluenceBounds, log: EventLog
) -> None:
    """Count in `ledger` the updates `journal` kept for its round before a restart; each
    accepted one's norm joins the `bounds`' history, as it did before the restart."""
    for device, payload in journal.replay():
        try:
            accepted = ledger.restore(device, payload)
            if accepted:
                bounds.remember(accepted.update)
                log("replayed", round=ledger.round, device=device)
        except Rejected as exc:
            log("replay_skipped", round=ledger.round, device=device, reason=exc.reason)
