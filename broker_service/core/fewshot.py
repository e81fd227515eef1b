"""Few-shot evaluation on new devices (brief section 2, step 5), identical for every algorithm.

The evaluation rule (this is its one statement). A new device receives θ_g (θ without a split),
and with the split on draws a fresh θ_l as a device does in a round of seed 0. Then it makes
`eval_epochs` passes over its k-shot support set, each in a fresh order (one generator seeded
0 per device), batch-1 SGD on every sample:
- with the split on, the first `eval_head_epochs` passes' worth of steps (round(eval_head_epochs
  · support size), so 0.5 is the first half of a single pass) are head-only steps at `recon_lr`
  (θ_g frozen: the device round's reconstruction steps);
- every other step trains all parameters, the head at `recon_lr` and the layers below it at
  `adapt_lr`.
The metric is measured on the query samples.

The default protocol is online, as the paper's devices adapt: one pass (`eval_epochs` = 1),
each support sample used once; the multi-pass figure (core.hyperparams.MULTIPASS) is reported
beside it (`protocol_settings`). Resetting the head
of a model trained without a split is the same rule with the split on: θ_l is redrawn and
reconstructed first, as TinyMetaFed's new devices do.

How it differs from a device's round (device_agent.round): a round uses each streamed sample
once, in arrival order, reconstructs θ_l on the first `recon_samples` and adapts on the next
`adapt_samples` with one rate (`adapt_lr`); the evaluation keeps the head's rate in the full
steps and may make several shuffled passes. Without a split (TinyReptile, Reptile, FedAvg, no
federation) there are only full steps, so every algorithm gets the same steps and rates on the
same samples.

Metrics are pooled per *unit* (an episode's speaker, day, or the episode itself;
`unit_metrics`) and confidence intervals are taken over units (`summarise_units`).
"""

from __future__ import annotations

import numpy as np

from broker_service.core.device_round import full_params, reconstruct, sgd_steps
from broker_service.core.episode import Episode
from broker_service.core.nn import NumpyNet
from device_agent.round import DEFAULTS, effective_split, init_local

NEW_DEVICE_SEED = 0
"""The round seed a new device draws θ_l with, and the seed of its pass order."""


ONLINE = "online"
MULTIPASS = "multipass"
PROTOCOLS = (ONLINE, MULTIPASS)


def protocol_settings(settings: dict, protocol: str, passes: tuple[int, float]) -> dict:
    """The settings of an evaluation protocol: `online` as they are, `multipass` with
    `passes` = (eval_epochs, eval_head_epochs) (core.hyperparams.MULTIPASS)."""
    if protocol == ONLINE:
        return settings
    if protocol != MULTIPASS:
        raise ValueError("protocol %r: expected one of %s" % (protocol, ", ".join(PROTOCOLS)))
    return dict(settings, eval_epochs=passes[0], eval_head_epochs=passes[1])


def metric_value(kind: str, outputs: np.ndarray, y: np.ndarray) -> float:
    """'mse' (mean over samples and outputs) or 'accuracy' (argmax against labels)."""
    if kind == "mse":
        return float(np.mean((outputs - y.reshape(outputs.shape)) ** 2))
    return float(np.mean(outputs.argmax(axis=1) == y.reshape(-1)))


def classification_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """accuracy, balanced_accuracy (mean recall over the classes present in `labels`) and f1 of
    class 1 (binary tasks only; None when class 1 is absent from `labels`: on a day nobody is
    present F1 says nothing, and the false alarms count in accuracy and balanced accuracy)."""
    labels, predicted = labels.reshape(-1), predicted.reshape(-1)
    recalls = [float(np.mean(predicted[labels == c] == c)) for c in np.unique(labels)]
    out = {
        "accuracy": float(np.mean(predicted == labels)),
        "balanced_accuracy": float(np.mean(recalls)),
    }
    if max(int(labels.max()), int(predicted.max())) <= 1:
        tp = int(np.sum((predicted == 1) & (labels == 1)))
        wrong = int(np.sum(predicted != labels))
        out["f1"] = 2 * tp / (2 * tp + wrong) if np.any(labels == 1) else None
    return out


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
    `head_only`, only the head-only steps are run (θ_g unchanged)."""
    plan = net.plan
    split = effective_split(plan, split)
    params = full_params(plan, theta)
    n = len(support_x)
    epochs = int(settings["eval_epochs"])
    head_steps = 0
    if split:
        head_steps = min(int(round(float(settings["eval_head_epochs"]) * n)), epochs * n)
        local_init = settings["local_init"]
        init_local(plan, params, settings.get("seed", NEW_DEVICE_SEED), local_init)
    order = np.random.default_rng(NEW_DEVICE_SEED)
    perms = [order.permutation(n) for _ in range(epochs)]
    stream = np.concatenate(perms) if perms else np.zeros(0, dtype=np.int64)
    head, rest = stream[:head_steps], stream[head_steps:]
    if split:
        reconstruct(net, params, support_x[head], support_y[head], dict(DEFAULTS, **settings))
    if head_only or not len(rest):
        return params
    sgd_steps(
        net,
        params,
        support_x[rest],
        support_y[rest],
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


def episode_outputs(
    net: NumpyNet, theta: np.ndarray, split: bool, episodes: list[Episode], settings: dict
) -> list[np.ndarray]:
    """The network's outputs on each episode's query samples after the evaluation rule."""
    outputs = []
    for e in episodes:
        params = adapt(net, theta, split, e.support_x, e.support_y, settings)
        outputs.append(net.predict(params, e.query_x))
    return outputs


def unit_metrics(
    kind: str, episodes: list[Episode], outputs: list[np.ndarray]
) -> dict[str, dict[str, float | None]]:
    """Metrics per unit, in first-seen order: for 'mse' the mean of its episodes' MSE; for
    'accuracy' the `classification_metrics` of all its episodes' query predictions pooled."""
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(episodes):
        groups.setdefault(e.unit_id, []).append(i)
    out: dict[str, dict[str, float | None]] = {}
    for unit, members in groups.items():
        if kind == "mse":
            values = [metric_value(kind, outputs[i], episodes[i].query_y) for i in members]
            out[unit] = {"mse": float(np.mean(values))}
            continue
        labels = np.concatenate([episodes[i].query_y.reshape(-1) for i in members])
        predicted = np.concatenate([outputs[i].argmax(axis=1) for i in members])
        out[unit] = classification_metrics(labels, predicted)
    return out


def summarise_units(per_unit: dict[str, dict[str, float | None]], metric: str) -> dict:
    """Mean and 95 % CI over units of every metric the units carry (units where a metric is
    undefined, such as F1 on a day without presence, are left out of that metric and counted)."""
    names = sorted({k for values in per_unit.values() for k in values})
    out: dict = {"metric": metric, "units": len(per_unit)}
    for name in names:
        values = np.array([v[name] for v in per_unit.values() if v.get(name) is not None])
        headline = name == metric
        out["mean" if headline else name] = float(values.mean()) if len(values) else None
        out["ci95" if headline else name + "_ci95"] = ci95(values)
        if len(values) != len(per_unit):
            out[name + "_units"] = len(values)
    return out
