"""Few-shot evaluation on new devices (brief section 2, step 5), identical for every algorithm.

A new device receives θ_g. With split on, it re-creates θ_l fresh and fits it alone for
`eval_head_epochs` passes over its k-shot support set, then trains everything for the remaining
passes; with split off it trains everything for all `eval_epochs` passes from the received θ.
Every step is batch-1 SGD with the output layer at `recon_lr` and the rest at `adapt_lr`, so all
algorithms get the same steps and learning rates. The metric is measured on the query samples.
"""

from __future__ import annotations

import numpy as np

from broker_service.core.device_round import init_local
from broker_service.core.nn import NumpyNet
from broker_service.usecases.base import Episode
from device_agent.round import round_settings


def metric_value(kind: str, outputs: np.ndarray, y: np.ndarray) -> float:
    """'mse' (mean over samples and outputs) or 'accuracy' (argmax against labels)."""
    if kind == "mse":
        return float(np.mean((outputs - y.reshape(outputs.shape)) ** 2))
    return float(np.mean(outputs.argmax(axis=1) == y.reshape(-1)))


def adapt(
    net: NumpyNet,
    theta: np.ndarray,
    split: bool,
    support_x: np.ndarray,
    support_y: np.ndarray,
    settings: dict,
    head_only: bool = False,
) -> np.ndarray:
    """All parameters after few-shot adaptation on the support set (see the module docstring);
    with `head_only`, only the head passes are run (θ_g unchanged)."""
    plan = net.plan
    split = split and bool(plan.local_layers)
    params = np.zeros(plan.n_params, dtype=np.float32)
    params[: len(theta)] = theta
    epochs = int(settings["eval_epochs"])
    head_epochs = min(int(settings["eval_head_epochs"]), epochs) if split else 0
    if head_only:
        epochs = head_epochs
    if split:
        init_local(net, params, round_settings({"seed": settings.get("seed", 0)}))
    order = np.random.default_rng(0)
    head = plan.local_layers[0] if plan.local_layers else plan.param_layers[-1]
    lo_head = plan.layers[head].w_off
    for epoch in range(epochs):
        for j in order.permutation(len(support_x)):
            x = support_x[j : j + 1]
            y = support_y[j : j + 1]
            if epoch < head_epochs:
                net.sgd_step(params, x, y, settings["recon_lr"], head)
            else:
                _two_rate_step(net, params, x, y, settings, lo_head)
    return params


def adapt_and_measure(
    net: NumpyNet, theta: np.ndarray, split: bool, episode: Episode, settings: dict, metric: str
) -> float:
    """Adapt θ on the episode's support set as described above; return the query metric."""
    params = adapt(net, theta, split, episode.support_x, episode.support_y, settings)
    return metric_value(metric, net.predict(params, episode.query_x), episode.query_y)


def _two_rate_step(net: NumpyNet, params: np.ndarray, x, y, settings: dict, lo_head: int) -> None:
    _, grad = net.gradient(params, x, y, net.plan.param_layers[0])
    params[:lo_head] -= np.float32(settings["adapt_lr"]) * grad[:lo_head]
    params[lo_head:] -= np.float32(settings["recon_lr"]) * grad[lo_head:]


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
