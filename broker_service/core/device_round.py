"""The agent's device round (device_agent.round) done with numpy: its twin, for fast fleets.

Same steps, same order, same payload codec as the MicroPython agent, so its deltas equal the
agent's to float32 tolerance (parity-tested); only the arithmetic is vectorised. The split, the
head and θ_l's fresh draw come from device_agent.round itself. The step helpers are shared with
the few-shot evaluation of new devices (broker_service.core.fewshot).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from broker_service.core.nn import NumpyNet
from device_agent import codec
from device_agent.model import Plan
from device_agent.round import (
    adapt_layers,
    effective_split,
    global_size,
    head_index,
    init_local,
    residual_applies,
    round_macs,
    round_settings,
)
from device_agent.topk import top_k_count


@dataclass
class DeviceRoundResult:
    """A device round computed on the server: the encoded DELTA payload plus what the device
    would have measured doing it (the fields of the agent's RoundResult), and for the staleness
    figures the L2 norms of the residual added back and of Δ before it."""

    payload: bytes
    samples: int
    macs: int
    nnz: int
    recon_loss: float = 0.0
    adapt_loss: float = 0.0
    adapt_loss_first: float = 0.0
    adapt_loss_last: float = 0.0
    residual_norm: float = 0.0
    delta_norm: float = 0.0


def top_k_indices(delta: np.ndarray, k: int) -> np.ndarray:
    """Ascending indices of the k largest |delta|, ties to the lowest index (as agent topk)."""
    order = np.argsort(-np.abs(delta), kind="stable")[:k]
    return np.sort(order).astype(np.uint32)


def full_params(plan: Plan, theta_g: np.ndarray) -> np.ndarray:
    """All parameters of the model: the received θ_g in front, zeros for θ_l (as the device's
    buffer holds them before θ_l is drawn)."""
    params = np.zeros(plan.n_params, dtype=np.float32)
    params[: len(theta_g)] = theta_g
    return params


def sgd_steps(
    net: NumpyNet,
    params: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    lr: float,
    first: int,
    last: int | None = None,
    head_lr: float | None = None,
) -> tuple[float, float, float]:
    """Batch-1 SGD over the samples in order, training layers first..last in place; returns the
    (mean, first, last) pre-step loss. With `head_lr`, the head (see device_agent.round.
    head_index) and everything above it step at `head_lr` and the layers below at `lr`."""
    losses = [
        _step(net, params, xs[j : j + 1], ys[j : j + 1], lr, first, last, head_lr)
        for j in range(len(xs))
    ]
    if not losses:
        return 0.0, 0.0, 0.0
    return float(np.mean(losses)), losses[0], losses[-1]


def _step(net, params, x, y, lr, first, last, head_lr) -> float:
    if head_lr is None:
        return net.sgd_step(params, x, y, lr, first, last)
    loss, grad = net.gradient(params, x, y, first)
    lo = net.plan.layers[first].w_off
    lo_head = net.plan.layers[head_index(net.plan)].w_off
    params[lo:lo_head] -= np.float32(lr) * grad[lo:lo_head]
    params[lo_head:] -= np.float32(head_lr) * grad[lo_head:]
    return loss


def reconstruct_steps(
    net: NumpyNet, params: np.ndarray, xs: np.ndarray, ys: np.ndarray, lr: float
) -> float:
    """Step a of the round: head-only steps (θ_g frozen) on the samples; returns the mean loss.
    θ_l must already be drawn (device_agent.round.init_local)."""
    return sgd_steps(net, params, xs, ys, lr, head_index(net.plan))[0]


def reconstruct(
    net: NumpyNet, params: np.ndarray, xs: np.ndarray, ys: np.ndarray, settings: dict
) -> float:
    """Step a of the round on θ_l already drawn: head-only SGD steps at `recon_lr`; returns the
    mean loss the device reports."""
    return reconstruct_steps(net, params, xs, ys, settings["recon_lr"])


def simulate_round(
    net: NumpyNet,
    theta_g: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    command: dict,
    residual: np.ndarray | None = None,
    last_round: int | None = None,
) -> DeviceRoundResult:
    """Run one TinyMetaFed/TinyReptile device round on the samples (xs, ys), in order, once each.

    `residual` (updated in place) and `last_round`, the round that last updated it, are the
    device's error-feedback memory, as device_agent.round.run_round takes them."""
    s = round_settings(command)
    plan = net.plan
    split = effective_split(plan, s["split"])
    s["split"] = split
    n_g = global_size(plan, split)
    params = full_params(plan, theta_g)
    recon = min(int(s["recon_samples"]), len(xs)) if split else 0
    recon_loss = 0.0
    if split:
        init_local(plan, params, s["seed"], s["local_init"])
        recon_loss = reconstruct(net, params, xs[:recon], ys[:recon], s)
    origin = params[:n_g].copy()
    adapt = min(int(s["adapt_samples"]), len(xs) - recon)
    first, last = adapt_layers(plan, s)
    end = recon + adapt
    mean, first_loss, last_loss = sgd_steps(
        net, params, xs[recon:end], ys[recon:end], s["adapt_lr"], first, last
    )
    delta = params[:n_g] - origin
    delta_norm = float(np.linalg.norm(delta))
    residual_norm = 0.0
    if s["error_feedback"] and residual is not None and residual_applies(s, last_round):
        residual_norm = float(np.linalg.norm(residual))
        delta = delta + residual
    idx = top_k_indices(delta, top_k_count(n_g, float(s["top_p"])))
    payload = codec.encode(
        codec.KIND_DELTA,
        n_g,
        idx.tolist(),
        delta[idx].tolist(),
        int(s.get("version", 0)),
        int(s.get("round", 0)),
        min(end, codec.MAX_SAMPLES),
        codec.value_encoding(s["values"]),
    )
    if s["error_feedback"] and residual is not None:
        _, sent_idx, sent = codec.decode(payload)
        residual[:] = delta
        residual[np.asarray(sent_idx, dtype=np.int64)] -= np.asarray(sent, dtype=np.float32)
    return DeviceRoundResult(
        bytes(payload),
        end,
        round_macs(plan, s, recon, adapt),
        len(idx),
        recon_loss,
        mean,
        first_loss,
        last_loss,
        residual_norm,
        delta_norm,
    )
