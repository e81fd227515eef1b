"""Closed-form heads: θ_l fitted in one pass over the reconstruction samples, without SGD.

A round's `head_init` (device_agent.round.HEAD_INITS) says how θ_l is rebuilt on the first
`recon_samples` streamed samples:
- "sgd": a fresh θ_l (`local_init`), then one batch-1 SGD step per sample (θ_g frozen);
- "closed_form": one forward pass per sample feeds running statistics of the head's input
  features h (the penultimate activations), and θ_l is set from them at the end:
  - softmax_ce (classification): class prototypes μ_c, the mean h of class c's samples, give
    the head W_c = 2 μ_c, b_c = −‖μ_c‖² (logits are −‖h − μ_c‖² up to a term common to every
    class). A class without a sample gets W_c = 0 and the lowest bias of the seen classes, so
    with non-negative features (ReLU) it never wins over a seen class yet can still learn.
    Memory: classes × (features + 1) floats.
  - mse (regression): ridge regression of every output on [h, 1]:
    (Σ h̃ h̃ᵀ + λ I) w_o = Σ h̃ y_o, λ = `head_ridge` (the bias is regularised too), solved by
    a Cholesky factorisation in place. Memory: (features + 1)² + (features + 1) × outputs
    floats, so models with more than limits.MAX_RIDGE_FEATURES features keep the SGD head.
The closed form applies when θ_l is one dense layer that is the model's last layer; otherwise
(and for "sgd") the round uses the SGD head. Adaptation then refines the head by SGD when
`joint` is on. Samples are still used once each and never stored.

Pure Python on flat arrays (MicroPython first); broker_service.core.heads is the numpy twin.
"""

import math

from device_agent import limits
from device_agent.compat import micropython


def closed_form_applies(plan):
    """Whether `plan` has a head the closed form can fit: θ_l is one dense layer, last in the
    model, and for mse at most limits.MAX_RIDGE_FEATURES input features."""
    if len(plan.local_layers) != 1:
        return False
    i = plan.local_layers[0]
    layer = plan.layers[i]
    if layer.kind != "dense" or i != len(plan.layers) - 1:
        return False
    return plan.loss != "mse" or layer.size_in() <= limits.MAX_RIDGE_FEATURES


def scratch_size(plan):
    """Floats of scratch the closed-form fit of `plan`'s head needs."""
    layer = plan.layers[plan.local_layers[0]]
    n_in, n_out = layer.size_in(), layer.out_shape[0]
    if plan.loss == "mse":
        m = n_in + 1
        return m * m + m * n_out + m
    return n_out * (n_in + 1)


def fit_head(net, params, samples, count, ridge):
    """Set θ_l in `params` by the closed form from `count` samples of `samples` (θ_g frozen);
    returns (samples used, mean loss of those samples under the head held before the fit).

    `net` is a device_agent.network.Network whose plan passes closed_form_applies; its
    `head_scratch` holds the running statistics (no allocation per sample).
    """
    plan = net.plan
    i = plan.local_layers[0]
    layer = plan.layers[i]
    n_in, n_out = layer.size_in(), layer.out_shape[0]
    regression = plan.loss == "mse"
    stats = net.head_scratch(scratch_size(plan))
    size = scratch_size(plan)
    for j in range(size):
        stats[j] = 0.0
    feats = net.acts[i]
    total = 0.0
    used = 0
    if count > 0:
        for x, y in samples:
            total += net.loss(params, x, y)
            if regression:
                _add_gram(stats, feats, y, n_in, n_out)
            else:
                _add_prototype(stats, feats, int(y), n_in, n_out)
            used += 1
            if used >= count:
                break
    if regression:
        _solve_ridge(stats, params, layer, float(ridge))
    else:
        _set_prototypes(stats, params, layer)
    return used, (total / used if used else 0.0)


@micropython.native
def _add_prototype(sums, feats, label, n_in, n_out):
    """Row c of `sums` (n_in + 1 floats) accumulates class c's features, then its count."""
    if label < 0 or label >= n_out:
        return
    row = label * (n_in + 1)
    for k in range(n_in):
        sums[row + k] += feats[k]
    sums[row + n_in] += 1.0


@micropython.native
def _set_prototypes(sums, params, layer):
    n_in, n_out = layer.size_in(), layer.out_shape[0]
    w_off, b_off = layer.w_off, layer.b_off
    lowest = None
    for c in range(n_out):
        row = c * (n_in + 1)
        count = sums[row + n_in]
        norm = 0.0
        for k in range(n_in):
            mean = sums[row + k] / count if count > 0 else 0.0
            params[w_off + c * n_in + k] = 2.0 * mean
            norm += mean * mean
        params[b_off + c] = -norm
        if count > 0 and (lowest is None or -norm < lowest):
            lowest = -norm
    for c in range(n_out):
        if sums[c * (n_in + 1) + n_in] <= 0:
            params[b_off + c] = lowest if lowest is not None else 0.0


@micropython.native
def _add_gram(stats, feats, target, n_in, n_out):
    """Upper triangle of Σ h̃ h̃ᵀ in stats[: m·m] and Σ h̃ yᵀ in the next m·n_out (h̃ = [h, 1])."""
    m = n_in + 1
    rhs = m * m
    for a in range(m):
        ha = feats[a] if a < n_in else 1.0
        if ha == 0.0:
            continue
        row = a * m
        for b in range(a, n_in):
            stats[row + b] += ha * feats[b]
        stats[row + n_in] += ha
        for o in range(n_out):
            stats[rhs + a * n_out + o] += ha * target[o]


@micropython.native
def _solve_ridge(stats, params, layer, ridge):
    """(G + ridge·I) w_o = r_o for every output o by Cholesky: G's upper triangle holds the
    matrix, L is written into its lower triangle (diagonal included); pivots are kept ≥ ridge,
    the smallest eigenvalue in exact arithmetic."""
    n_in, n_out = layer.size_in(), layer.out_shape[0]
    m = n_in + 1
    rhs = m * m
    z = rhs + m * n_out
    for j in range(m):
        s = stats[j * m + j] + ridge
        for k in range(j):
            s -= stats[j * m + k] * stats[j * m + k]
        d = math.sqrt(s if s > ridge else ridge)
        stats[j * m + j] = d
        for i in range(j + 1, m):
            s = stats[j * m + i]
            for k in range(j):
                s -= stats[i * m + k] * stats[j * m + k]
            stats[i * m + j] = s / d
    for o in range(n_out):
        for i in range(m):
            s = stats[rhs + i * n_out + o]
            for k in range(i):
                s -= stats[i * m + k] * stats[z + k]
            stats[z + i] = s / stats[i * m + i]
        for i in range(m - 1, -1, -1):
            s = stats[z + i]
            for k in range(i + 1, m):
                s -= stats[k * m + i] * stats[z + k]
            stats[z + i] = s / stats[i * m + i]
        for k in range(n_in):
            params[layer.w_off + o * n_in + k] = stats[z + k]
        params[layer.b_off + o] = stats[z + n_in]


def fit_macs(plan, count):
    """Multiply-accumulates of a closed-form fit on `count` samples: a forward pass and the
    statistics per sample, then the prototypes or the Cholesky solve once."""
    layer = plan.layers[plan.local_layers[0]]
    n_in, n_out = layer.size_in(), layer.out_shape[0]
    if plan.loss == "mse":
        m = n_in + 1
        per_sample = m * (m + 1) // 2 + m * n_out
        once = m * m * m // 6 + m * m * n_out
    else:
        per_sample = n_in
        once = n_out * n_in
    return count * (plan.forward_macs() + per_sample) + once
