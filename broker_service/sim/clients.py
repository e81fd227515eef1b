"""Simulated clients: what one device does with its samples in a round, for the simulation.

The strategy's plain attribute `stored_data` picks the client:
- False (TinyMetaFed, TinyReptile): the agent's online round, each sample used once, by its
  numpy twin (broker_service.core.device_round.simulate_round);
- True (Reptile, FedAvg): mini-batch SGD on the stored samples for `inner_epochs` epochs of
  `inner_batch`, all parameters, uploaded as a dense float32 DELTA. The step of a batch of B
  is B · `adapt_lr` on the batch's mean gradient (the linear scaling rule, Goyal et al. 2017:
  to first order the step of B batch-1 steps), so `adapt_lr` is a per-sample rate for every
  algorithm and one search box serves them all.
Both return the encoded payload and the device's multiply-accumulates (for mini-batches, the
per-sample forward and backward MACs of every sample of every epoch: what the device computes).
"""

from __future__ import annotations

import numpy as np

from broker_service.core.device_round import DeviceRoundResult, simulate_round
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import Strategy
from device_agent import codec


def local_update(
    strategy: Strategy,
    net: NumpyNet,
    theta: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    command: dict,
    residual: np.ndarray | None = None,
    last_round: int | None = None,
) -> DeviceRoundResult:
    """One device's round under `strategy` on its samples (xs, ys) and the round command;
    `residual` and `last_round` are the device's error-feedback memory (simulate_round)."""
    if strategy.stored_data:
        return stored_data_update(net, theta, xs, ys, command, strategy.settings)
    return simulate_round(net, theta, xs, ys, command, residual, last_round)


def stored_data_update(
    net: NumpyNet, theta: np.ndarray, xs: np.ndarray, ys: np.ndarray, command: dict, settings: dict
) -> DeviceRoundResult:
    """Reptile/FedAvg local training: epochs of shuffled mini-batches (order seeded by the round
    seed) over the stored samples, each stepped at len(batch) · adapt_lr; returns the dense
    delta from θ, encoded."""
    params = np.array(theta, dtype=np.float32)
    epochs = int(settings["inner_epochs"])
    batch = int(settings["inner_batch"])
    order = np.random.default_rng(int(command["seed"]))
    for _ in range(epochs):
        perm = order.permutation(len(xs))
        for lo in range(0, len(xs), batch):
            sel = perm[lo : lo + batch]
            net.sgd_step(params, xs[sel], ys[sel], len(sel) * float(settings["adapt_lr"]), 0)
    delta = params - np.asarray(theta, dtype=np.float32)
    payload = codec.encode(
        codec.KIND_DELTA,
        len(delta),
        None,
        delta.tolist(),
        int(command["version"]),
        int(command["round"]),
        len(xs),
    )
    macs = len(xs) * epochs * net.plan.train_step_macs(net.plan.param_layers[0])
    return DeviceRoundResult(bytes(payload), len(xs), macs, len(delta))
