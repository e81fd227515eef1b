"""Few-shot evaluation on new devices (brief section 2, step 5), identical for every algorithm.

The evaluation rule (this is its one statement). A new device receives θ_g (θ without a split),
and with the split on draws a fresh θ_l as a device does in a round of seed 0. Then it makes
`eval_epochs` passes over its k-shot support set, each in a fresh order (one generator seeded
0 per device), batch-1 SGD on every sample:
- with the split on, the first `eval_head_epochs` passes are head-only steps at `recon_lr`
  (θ_g frozen: the device round's reconstruction steps);
- every other pass trains all parameters, the head at `recon_lr` and the layers below it at
  `adapt_lr`.
The metric is measured on the query samples.

How it differs from a device's round (device_agent.round): a round uses each streamed sample
once, in arrival order, reconstructs θ_l on the first `recon_samples` and adapts on the next
`adapt_samples` with one rate (`adapt_lr`); the evaluation makes several shuffled passes over
the same few support samples and keeps the head's rate in the full passes. Without a split
(TinyReptile, Reptile, FedAvg, no federation) there are only full passes, so every algorithm
gets the same steps and rates on the same samples.
"""

from __future__ import annotations

import numpy as np

from broker_service.core.device_round import full_params, reconstruct_steps, sgd_steps
from broker_service.core.nn import NumpyNet
from broker_service.usecases.base import Episode
from device_agent.round import DEFAULTS, effective_split, init_local

NEW_DEVICE_SEED = 0
"""The round seed a new device draws θ_l with, and the seed of its pass order."""


def metric_value(kind: str, outputs: np.ndarray, y: np.ndarray) -> float:
    """'mse' (mean over samples and outputs) or 'accuracy' (argmax against labels)."""
    if kind == "mse":
        return float(np.mean((outputs - y.reshape(outputs.shape)) ** 2))
    return float(np.mean(outputs.argmax(axis=1) == y.reshape(-1)))


def ci95(values: np.ndarray) -> float:
    """Half-width of the normal 95 % confidence interval of the mean: 1.96 s / √n (sample
    standard deviation, ddof=1); 0.0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    return float(1.96 * float(np.std(values, ddof=1)) / np.sqrt(len(values)))


def adapt(
    net: NumpyNet,
    theta: np.ndarray,
    split: bool,
    support_x: np.ndarray,
    support_y: np.ndarray,
    settings: dict,
    head_only: bool = False,
) -> np.ndarray:
    """All parameters after the evaluation rule (module docstring) on the support set; with
    `head_only`, only the head-only passes are run (θ_g unchanged)."""
    plan = net.plan
    split = effective_split(plan, split)
    params = full_params(plan, theta)
    epochs = int(settings["eval_epochs"])
    head_epochs = min(int(settings["eval_head_epochs"]), epochs) if split else 0
    if head_only:
        epochs = head_epochs
    if split:
        local_init = settings.get("local_init", DEFAULTS["local_init"])
        init_local(plan, params, settings.get("seed", NEW_DEVICE_SEED), local_init)
    order = np.random.default_rng(NEW_DEVICE_SEED)
    for epoch in range(epochs):
        perm = order.permutation(len(support_x))
        xs, ys = support_x[perm], support_y[perm]
        if epoch < head_epochs:
            reconstruct_steps(net, params, xs, ys, settings["recon_lr"])
        else:
            sgd_steps(
                net,
                params,
                xs,
                ys,
                settings["adapt_lr"],
                plan.param_layers[0],
                head_lr=settings["recon_lr"],
            )
    return params


def adapt_and_measure(
    net: NumpyNet, theta: np.ndarray, split: bool, episode: Episode, settings: dict, metric: str
) -> float:
    """Adapt θ on the episode's support set as described above; return the query metric."""
    params = adapt(net, theta, split, episode.support_x, episode.support_y, settings)
    return metric_value(metric, net.predict(params, episode.query_x), episode.query_y)


def evaluate_on_episodes(
    net: NumpyNet,
    theta: np.ndarray,
    split: bool,
    episodes: list[Episode],
    settings: dict,
    metric: str,
) -> np.ndarray:
    """The metric of each episode (one new device each)."""
    return np.array([adapt_and_measure(net, theta, split, e, settings, metric) for e in episodes])
