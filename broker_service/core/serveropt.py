"""The server's optimiser: how the aggregated delta moves θ_g (pure functions over arrays).

The aggregated delta Agg({Δ_i}) is treated as a pseudo-gradient pointing uphill (Reptile's
direction), and the step size lr is Reptile's β_t (its linear decay included):
- 'sgd': θ ← θ + lr · Agg (Reptile's outer step, the default);
- 'adam': the adaptive server optimiser of FedOpt (Reddi et al., "Adaptive Federated
  Optimization", ICLR 2021): m ← β₁ m + (1 − β₁) Agg; v ← β₂ v + (1 − β₂) Agg²;
  θ ← θ + lr · m / (√v + τ), with v starting at τ² and no bias correction, as in the paper.

Coordinates nobody sent this round have Agg = 0: their moments decay.
The state (step count and moments, float32 like θ_g) is what the checkpoint keeps, so a
restarted service continues with the same moments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OPTIMISERS = ("sgd", "adam")
"""The values of the `server_optimiser` setting."""


@dataclass(frozen=True)
class ServerOptimiser:
    """The server optimiser's settings: `name` (OPTIMISERS), `beta1` (Adam's β₁), `beta2` (β₂)
    and `eps` (τ)."""

    name: str = "sgd"
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-3

    @classmethod
    def from_settings(cls, settings: dict) -> ServerOptimiser:
        """The optimiser of a session's training settings (`server_optimiser`,
        `server_beta1`, `server_beta2`, `server_eps`); ValueError naming a bad one."""
        opt = cls(
            str(settings["server_optimiser"]),
            float(settings["server_beta1"]),
            float(settings["server_beta2"]),
            float(settings["server_eps"]),
        )
        opt.check()
        return opt

    def check(self) -> None:
        """ValueError unless the settings can work."""
        if self.name not in OPTIMISERS:
            raise ValueError(
                "server_optimiser %r is unknown: %s" % (self.name, ", ".join(OPTIMISERS))
            )
        if not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise ValueError(
                "server_beta1 and server_beta2 must be in [0, 1), got %g and %g"
                % (self.beta1, self.beta2)
            )
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError("server_eps must be a positive number, got %g" % self.eps)

    @property
    def moments(self) -> tuple[str, ...]:
        """The names of the arrays its state keeps."""
        return () if self.name == "sgd" else ("m", "v")


@dataclass(frozen=True)
class ServerState:
    """The optimiser's state: steps taken and its moment arrays by name (float32)."""

    step: int = 0
    arrays: dict[str, np.ndarray] | None = None


def initial_state(opt: ServerOptimiser, n: int) -> ServerState:
    """The state before the first step: m = 0, v = τ² (FedOpt's start)."""
    arrays = {}
    if "m" in opt.moments:
        arrays["m"] = np.zeros(n, dtype=np.float32)
    if "v" in opt.moments:
        arrays["v"] = np.full(n, opt.eps * opt.eps, dtype=np.float32)
    return ServerState(0, arrays)


def state_fits(opt: ServerOptimiser, state: ServerState, n: int) -> bool:
    """True when `state` holds exactly the optimiser's moments, each of length n and finite."""
    arrays = state.arrays or {}
    if set(arrays) != set(opt.moments):
        return False
    return all(len(a) == n and bool(np.all(np.isfinite(a))) for a in arrays.values())


def server_update(
    theta: np.ndarray, agg: np.ndarray, lr: float, opt: ServerOptimiser, state: ServerState
) -> tuple[np.ndarray, ServerState]:
    """(new θ, new state) after one server step of size `lr` along the aggregated delta `agg`;
    neither θ nor `state` is changed. A `state` that does not fit starts afresh."""
    if opt.name == "sgd":
        return (theta + np.float32(lr) * agg).astype(np.float32), ServerState(state.step + 1, {})
    if not state_fits(opt, state, len(theta)):
        state = initial_state(opt, len(theta))
    arrays = state.arrays or {}
    g = np.asarray(agg, dtype=np.float64)
    m = opt.beta1 * arrays["m"].astype(np.float64) + (1.0 - opt.beta1) * g
    v = opt.beta2 * arrays["v"].astype(np.float64) + (1.0 - opt.beta2) * g * g
    direction = m / (np.sqrt(v) + opt.eps)
    new = {"m": m.astype(np.float32), "v": v.astype(np.float32)}
    stepped = (theta.astype(np.float64) + lr * direction).astype(np.float32)
    return stepped, ServerState(state.step + 1, new)
