"""How far one device can move θ_g: the bounds the service puts on every update, shared with the
simulation so the benchmarks measure what the service does.

- The sample count an update claims is clamped to what its round asked for (recon + adapt
  samples): a device's weight in the sample-weighted mean is at most an honest device's.
- An update with more entries than the round's Top-P% keeps (`entry_budget`) is refused: a
  device cannot spread its influence over coordinates the honest ones leave alone.
- An update longer than the norm bound is refused. The bound exists from the first update:
  ‖θ_g‖ (see aggregate.model_norm_bound) until `MIN_NORMS` updates have been accepted, then the
  tighter of that and `NORM_FACTOR` × the median norm of the last `RECENT_NORMS` accepted ones.
  The norms are kept in the checkpoint, so a restart does not reopen the window.
- Every accepted update is clipped to `clip_recent` × the median norm of the accepted updates
  (from the first round: the history then holds that round's own) before the strategy
  aggregates (the default aggregation is this clipped mean; docs/trust.md has the
  measurements), so an update pointing anywhere moves θ_g by at most a few honest updates' worth.
- With `trust_rate` > 0, each clipped update is then weighed by its device's trust (core.trust:
  how far its updates, remembered across rounds, agree with the consensus of every device's;
  a newcomer's first `trust_probation` updates count less; kept in the checkpoint); a device
  that keeps pointing against most others stops counting, and with `trust_clip` an update
  weighed w < 1 is clipped to w × the clip bound as well.
- θ_g's length stays within `max_model_growth` × its length when the session started (the
  new θ_g is scaled down onto that sphere when a step would take it further; 0 turns it off).
  Colluding devices that push one direction round after round would otherwise carry θ_g
  away where honest updates barely push back; honest sessions of the served algorithms stay
  within the default (`benchmarks/hostile.py norms`, docs/trust.md), while the stored-data
  baselines' longer local training can reach it (the bench records the rounds it capped). The
  starting length is kept in the checkpoint.
- A step that would make θ_g non-finite is refused and θ_g stays as it was.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

from broker_service.core.aggregate import (
    SparseUpdate,
    all_finite,
    cap_norm,
    clamp_samples,
    clip_update,
    median_norm_bound,
    model_norm_bound,
    update_norm,
    within_bound,
)
from broker_service.core.settings import check_settings
from broker_service.core.trust import DeviceTrust, weighted
from device_agent.topk import top_k_count

RECENT_NORMS = 200
"""How many accepted update norms the history-based bounds look back on."""
MIN_NORMS = 20
"""Accepted updates needed before the history-based bounds apply (the model bound before)."""
NORM_FACTOR = 100.0
"""The refusal bound as a multiple of the recent median norm: only absurd updates are refused;
clipping bounds the rest."""
CLIP_RECENT = 2.0
"""Default `clip_recent`, chosen by `benchmarks/hostile.py sweep` (docs/trust.md): at 1× the
clean sine error doubled (honest updates of large-amplitude waves are long, and clipping them to
the median starves the meta-update); at 3× and 5×, 4 of 20 devices pushing one direction made
sine diverge on every seed and reversed updates took Omniglot to chance on some seeds. 2× costs
the clean metric little and bounds a hostile update to twice a typical honest one."""


GROWTH = 3.0
"""Default `max_model_growth`: θ_g may grow to this many times its starting length. Honest
sessions of TinyMetaFed and TinyReptile, the served algorithms, stay well within it on the four
use cases (`benchmarks/hostile.py norms` → hostile-norms.json; `hostile.py step-sweep` for
longer outer steps); Reptile and FedAvg, simulation baselines, can reach it on sine."""


def sample_budget(command: dict) -> int:
    """The samples a round command asks a device to use (reconstruction + adaptation)."""
    return int(command.get("recon_samples", 0)) + int(command.get("adapt_samples", 0))


def entry_budget(command: dict, n: int) -> int:
    """The entries a round command lets an update of length n carry: what the device's Top-P%
    keeps (device_agent.topk.top_k_count, the agent's own rule), all n without a `top_p`."""
    return top_k_count(n, float(command.get("top_p", 100.0)))


class InfluenceBounds:
    """The norm history and the bounds derived from it; `enabled=False` turns every bound off
    (only for benchmarks that show what the bounds prevent)."""

    def __init__(
        self,
        max_norm: float = 0.0,
        clip_recent: float = CLIP_RECENT,
        floor: float = 0.0,
        norms: Iterable[float] = (),
        enabled: bool = True,
        trust: DeviceTrust | None = None,
        growth: float = GROWTH,
        trust_clip: bool = True,
    ) -> None:
        self.max_norm = float(max_norm)
        self.growth = float(growth)
        self.reference = 0.0  # ‖θ_g‖ when the session started (set by the first step)
        self.capped = False  # whether the last step was scaled down to the growth bound
        self.clip_recent = float(clip_recent)
        self.floor = float(floor)
        self.enabled = enabled
        self.norms: deque[float] = deque(maxlen=RECENT_NORMS)
        self.clipped: list[int] = []
        self.trust = trust if trust is not None else DeviceTrust()
        self.trust_clip = bool(trust_clip)
        self._clip = 0.0  # the clip bound of the updates being aggregated
        self.restore(norms)

    @classmethod
    def from_settings(cls, settings: dict, max_norm: float = 0.0) -> InfluenceBounds:
        """Bounds for a session's training settings (checked by core.settings.check_settings,
        ValueError naming a bad one): `clip_recent`, the model bound's floor adapt_lr × samples
        a round (for a θ_g near zero), device trust at `trust_rate` / `trust_full` /
        `trust_probation` (a rate of 0 turns it off), and `max_model_growth` (0 or at least 1:
        a smaller factor would shrink every honest model)."""
        checked = check_settings(settings)
        floor = checked.adapt_lr * (checked.recon_samples + checked.adapt_samples)
        trust = DeviceTrust(
            checked.trust_rate, checked.trust_full, probation=checked.trust_probation
        )
        trust_clip = checked.trust_clip
        growth = checked.max_model_growth
        return cls(
            max_norm,
            checked.clip_recent,
            floor,
            trust=trust,
            growth=growth,
            trust_clip=trust_clip,
        )

    def restore(self, norms: Iterable[float]) -> None:
        """Take over a saved history (e.g. from a checkpoint); entries that are not positive
        finite numbers are skipped."""
        for value in norms:
            if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
                self.norms.append(float(value))

    def to_list(self) -> list[float]:
        """The history, oldest first (what the checkpoint keeps)."""
        return list(self.norms)

    def _has_history(self) -> bool:
        return len(self.norms) >= MIN_NORMS

    def norm_bound(self, theta: np.ndarray) -> float:
        """The L2 norm above which an update is refused (0 when the bounds are off): the
        configured `max_norm`, else the model bound, tightened by the history once known."""
        if not self.enabled:
            return 0.0
        if self.max_norm > 0:
            return self.max_norm
        bound = model_norm_bound(theta, self.floor)
        if self._has_history():
            bound = min(bound, median_norm_bound(self.norms, NORM_FACTOR))
        return bound

    def clip_bound(self, theta: np.ndarray) -> float:
        """The L2 norm every accepted update is clipped to before aggregation (0: no clipping):
        `clip_recent` × the median of the norms known so far, however few (at a round's close
        they include the round's own, so from the first round a minority cannot set it), and
        never above the refusal bound."""
        if not self.enabled or self.clip_recent <= 0:
            return 0.0
        if not self.norms:
            return self.norm_bound(theta)
        return min(self.norm_bound(theta), median_norm_bound(self.norms, self.clip_recent))

    def screen(
        self, update: SparseUpdate, theta: np.ndarray, budget: int, entries: int = 0
    ) -> SparseUpdate | None:
        """The update as it may count (samples clamped to `budget`), or None when it has more
        than `entries` entries (0: any number) or its norm is over the bound or not finite;
        what the service's round ledger does with a decoded update."""
        if not self.enabled:
            return update
        if entries > 0 and len(update.values) > entries:
            return None
        if not within_bound(update_norm(update.values), self.norm_bound(theta)):
            return None
        return clamp_samples(update, budget)

    def remember(self, update: SparseUpdate) -> None:
        """Add an accepted update's norm to the history."""
        self.norms.append(update_norm(update.values))

    def clip(self, theta: np.ndarray, updates: Sequence[SparseUpdate]) -> list[SparseUpdate]:
        """The updates clipped to the clip bound; `clipped` lists the positions of those that
        were longer (a device clipped round after round is worth an operator's look)."""
        bound = self.clip_bound(theta)
        self._clip = bound
        out = [clip_update(u, bound) for u in updates] if bound > 0 else list(updates)
        self.clipped = [i for i, (u, c) in enumerate(zip(updates, out, strict=True)) if u is not c]
        return out

    def weigh(
        self, devices: Sequence[str] | None, updates: Sequence[SparseUpdate], t: int, n: int
    ) -> list[SparseUpdate]:
        """The (clipped) updates weighed by their devices' trust with this round's agreement
        in it; devices of weight 0 are left out. With `trust_clip`, an update of weight w < 1 is
        also clipped to w × the clip bound: a distrusted device loses its reach as well as its
        say (a device reversing at the clip bound would otherwise still move θ_g twice as far
        as a typical honest update for what weight it keeps). Unchanged without device ids or
        with trust off (`trust.downweighted` then empty)."""
        if not self.enabled or devices is None or not self.trust.enabled:
            self.trust.downweighted = []
            self.trust.pending = {}
            return list(updates)
        weights = self.trust.weigh(devices, updates, t, n)
        if self.trust_clip and self._clip > 0:
            updates = [
                clip_update(u, w * self._clip) if 0 < w < 1 else u
                for u, w in zip(updates, weights, strict=True)
            ]
        return weighted(updates, weights)

    def step(
        self,
        strategy,
        theta: np.ndarray,
        updates: Sequence[SparseUpdate],
        t: int,
        total: int,
        devices: Sequence[str] | None = None,
    ):
        """θ_g after the strategy's meta-update with the clipped updates weighed by the trust
        of `devices` (the updates' senders, in order) and kept within the growth bound
        (`capped` tells whether it had to be scaled down), or None when that would not be
        finite (the caller keeps θ_g)."""
        if self.reference <= 0:
            self.reference = update_norm(theta)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below
            kept = self.weigh(devices, self.clip(theta, updates), t, len(theta))
            new = np.asarray(strategy.aggregate(theta, kept, t, total), dtype=np.float32)
        if self.enabled and not all_finite(new):
            return None
        self.capped = False
        if self.enabled and self.growth > 0:
            limited = cap_norm(new, self.growth * self.reference)
            self.capped = limited is not new
            new = limited
        if devices is not None and self.enabled:
            self.trust.commit()
        return new
