"""A simulated device: the agent's round (device_agent.round) done with numpy, for fast fleets.

Same steps, same order, same payload codec as the MicroPython agent, so its deltas equal the
agent's to float32 tolerance (parity-tested); only the arithmetic is vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from broker_service.core.nn import NumpyNet
from device_agent import codec
from device_agent.model import init_layer
from device_agent.rng import XorShift32
from device_agent.round import global_size, round_macs, round_settings
from device_agent.topk import top_k_count


@dataclass
class SimResult:
    """A simulated round's payload plus what the device measured (mirrors RoundResult)."""

    payload: bytes
    samples: int
    macs: int
    nnz: int
    recon_loss: float = 0.0
    adapt_loss: float = 0.0
    adapt_loss_first: float = 0.0
    adapt_loss_last: float = 0.0
    extra: dict = field(default_factory=dict)


def top_k_indices(delta: np.ndarray, k: int) -> np.ndarray:
    """Ascending indices of the k largest |delta|, ties to the lowest index (as agent topk)."""
    order = np.argsort(-np.abs(delta), kind="stable")[:k]
    return np.sort(order).astype(np.uint32)


def init_local(net: NumpyNet, params: np.ndarray, settings: dict) -> None:
    """Fresh θ_l exactly as the agent draws it (zeros, or xorshift from the round seed)."""
    rng = XorShift32(int(settings["seed"]))
    zero = settings["local_init"] == "zeros"
    for i in net.plan.local_layers:
        init_layer(params, net.plan.layers[i], rng, zero)


def simulate_round(
    net: NumpyNet,
    theta_g: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    command: dict,
    residual: np.ndarray | None = None,
) -> SimResult:
    """Run one TinyMetaFed/TinyReptile device round on the samples (xs, ys), in order, once each."""
    s = round_settings(command)
    plan = net.plan
    split = bool(s["split"]) and bool(plan.local_layers)
    s["split"] = split
    n_g = global_size(plan, split)
    params = np.zeros(plan.n_params, dtype=np.float32)
    params[:n_g] = theta_g
    recon = min(int(s["recon_samples"]), len(xs)) if split else 0
    res = {"recon_loss": 0.0}
    if split:
        init_local(net, params, s)
        res["recon_loss"] = _steps(
            net, params, xs[:recon], ys[:recon], s["recon_lr"], plan.local_layers[0], None
        )[0]
    origin = params[:n_g].copy()
    adapt = min(int(s["adapt_samples"]), len(xs) - recon)
    last = plan.local_layers[0] - 1 if split and not s["joint"] else None
    mean, first, final = _steps(
        net,
        params,
        xs[recon : recon + adapt],
        ys[recon : recon + adapt],
        s["adapt_lr"],
        plan.param_layers[0],
        last,
    )
    delta = params[:n_g] - origin
    if s["error_feedback"] and residual is not None:
        delta = delta + residual
    idx = top_k_indices(delta, top_k_count(n_g, float(s["top_p"])))
    payload = codec.encode(
        codec.KIND_DELTA,
        n_g,
        idx.tolist(),
        delta[idx].tolist(),
        int(s.get("version", 0)),
        int(s.get("round", 0)),
        min(recon + adapt, codec.MAX_SAMPLES),
        codec.value_encoding(s["values"]),
    )
    if s["error_feedback"] and residual is not None:
        _, sent_idx, sent = codec.decode(payload)
        residual[:] = delta
        residual[np.asarray(sent_idx, dtype=np.int64)] -= np.asarray(sent, dtype=np.float32)
    return SimResult(
        bytes(payload),
        recon + adapt,
        round_macs(plan, s, recon, adapt),
        len(idx),
        res["recon_loss"],
        mean,
        first,
        final,
    )


def _steps(net, params, xs, ys, lr, first, last) -> tuple[float, float, float]:
    """Batch-1 SGD over the samples in order; returns (mean, first, last) pre-step loss."""
    losses = [
        net.sgd_step(params, xs[j : j + 1], ys[j : j + 1], lr, first, last) for j in range(len(xs))
    ]
    if not losses:
        return 0.0, 0.0, 0.0
    return float(np.mean(losses)), losses[0], losses[-1]
