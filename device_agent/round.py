"""One device round of TinyMetaFed (brief section 2, step 3), batch size 1, samples used once.

a. Local reconstruction: θ_l ← fresh init, then `recon_samples` SGD steps on θ_l, θ_g frozen.
b. Adaptation: `adapt_samples` SGD steps on θ_g, and on θ_l too when `joint` (the default;
   with it off θ_l stays frozen).
c. Δ = φ_g − θ_g, plus the error-feedback residual when enabled (dropped when the round
   numbers went back, see residual_applies); keep the Top-P% entries.
d. Encode the sparse update (the DELTA payload) for the server.

With split off (TinyReptile), θ_g is every parameter and there is no reconstruction.
"""

from device_agent import codec
from device_agent.model import init_layer
from device_agent.rng import XorShift32
from device_agent.topk import select_top_k, top_k_count

DEFAULTS = {
    "split": True,
    "recon_samples": 10,
    "adapt_samples": 20,
    "recon_lr": 0.05,
    "adapt_lr": 0.01,
    "joint": True,
    "top_p": 10.0,
    "values": "f16",
    "error_feedback": True,
    "local_init": "zeros",
    "seed": 0,
}

LOCAL_INITS = ("zeros", "glorot")
"""How a round may re-initialise θ_l (`local_init`): zeros, or Glorot-uniform from the seed."""


def round_settings(command):
    """The round command merged over DEFAULTS (unknown keys are kept, missing ones filled)."""
    settings = dict(DEFAULTS)
    settings.update(command)
    return settings


def global_size(plan, split):
    """Length of θ_g: the parameters in front of the local layers, or all of them."""
    return plan.n_global if split else plan.n_params


def effective_split(plan, split):
    """Whether a round asked for `split` really splits θ: only when the model has local layers
    (without them θ_g is every parameter and there is nothing to reconstruct)."""
    return bool(split) and bool(plan.local_layers)


def head_index(plan):
    """Index in plan.layers of the head: the first θ_l layer, or the output layer of a model
    without local layers. Reconstruction trains from here up; frozen adaptation stops below."""
    if plan.local_layers:
        return plan.local_layers[0]
    return plan.param_layers[-1]


def adapt_layers(plan, settings):
    """(first, last) layer indices the adaptation steps train: everything, or θ_g alone when
    split and not `joint` (last None means up to the output)."""
    last = None
    if effective_split(plan, settings["split"]) and not settings["joint"]:
        last = head_index(plan) - 1
    return plan.param_layers[0], last


def init_local(plan, params, seed, local_init):
    """Fresh θ_l in `params`: zeros when `local_init` is "zeros", else Glorot-uniform weights
    drawn with xorshift32 from `seed` (the round seed), biases zero."""
    rng = XorShift32(int(seed))
    zero = local_init == "zeros"
    for i in plan.local_layers:
        init_layer(params, plan.layers[i], rng, zero)


class RoundResult:
    """What a round produced: the DELTA payload and what the device measured doing it."""

    def __init__(self):
        self.payload = None
        self.samples = 0
        self.recon_loss = 0.0
        self.adapt_loss_first = 0.0
        self.adapt_loss_last = 0.0
        self.adapt_loss = 0.0
        self.macs = 0
        self.nnz = 0


def reconstruct_local(net, params, samples, settings, count):
    """Re-initialise θ_l and fit it on `count` samples with θ_g frozen (SGD steps); returns
    the mean loss."""
    plan = net.plan
    if not plan.local_layers:
        return 0.0
    init_local(plan, params, settings["seed"], settings["local_init"])
    if count <= 0:
        return 0.0
    first = head_index(plan)
    total = 0.0
    used = 0
    for x, y in samples:
        total += net.train_step(params, x, y, settings["recon_lr"], first)
        used += 1
        if used >= count:
            break
    return total / used if used else 0.0


def adapt_global(net, params, samples, settings, count, result):
    """`count` online SGD steps on θ_g (and θ_l when joint); records first/last/mean loss."""
    first, last = adapt_layers(net.plan, settings)
    total = 0.0
    used = 0
    if count <= 0:
        return 0
    for x, y in samples:
        loss = net.train_step(params, x, y, settings["adapt_lr"], first, last)
        if used == 0:
            result.adapt_loss_first = loss
        result.adapt_loss_last = loss
        total += loss
        used += 1
        if used >= count:
            break
    result.adapt_loss = total / used if used else 0.0
    return used


def residual_applies(settings, last_round):
    """Whether the kept error-feedback residual is added back this round: yes unless the round
    numbers went back since `last_round`, the round that last updated it (None: never), which
    means a new session whose residual belongs to another model."""
    if last_round is None:
        return True
    return int(settings.get("round", 0)) > int(last_round)


def sparse_delta(net, params, origin, n_global, percent, residual=None):
    """Turn origin[:n_global] (a copy of θ_g) into Δ (+ residual) in place with the network's
    kernels; returns (indices, values) of Top-P% (its scratch: net.scratch)."""
    net.delta_into(params, origin, n_global, residual)
    k = top_k_count(n_global, percent)
    idx = select_top_k(origin, k, net.scratch(n_global), n_global)
    values = codec.zeros(k)
    for j in range(k):
        values[j] = origin[idx[j]]
    return idx, values


def _just_encoded(buf, h):
    return True


def update_residual(net, residual, delta, idx, values, payload, n_global):
    """Error feedback: residual ← what the server will not see of Δ (unsent and rounding).
    The values as sent are read back from the payload into `values` (the round's k selected
    values, no longer needed once encoded): no new block on a fragmented heap. The payload was
    encoded just now: its checksum is not computed again."""
    h = codec.decode_header(payload, crc_ok=_just_encoded)
    pos = codec.HEADER_SIZE + h.body_len - codec.value_section_size(h.k, h.value_enc)
    codec.decode_values(payload, h, pos, values, 0)
    net.residual_into(residual, delta, n_global, idx, values)


def run_round(net, params, samples, command, residual=None, last_round=None):
    """Run one full device round; `params` holds θ_g on entry (θ_l is overwritten).

    `samples` yields (x, y) pairs, each used once; `residual` is this device's error-feedback
    memory of len(θ_g) floats (kept between rounds by the caller) or None, and `last_round` the
    round that last updated it (None: never), see residual_applies. Returns a
    RoundResult whose payload is the encoded DELTA.
    """
    s = round_settings(command)
    plan = net.plan
    split = effective_split(plan, s["split"])
    s["split"] = split
    n_global = global_size(plan, split)
    result = RoundResult()
    samples = iter(samples)
    recon = int(s["recon_samples"]) if split else 0
    if split:
        result.recon_loss = reconstruct_local(net, params, samples, s, recon)
    origin = net.delta_buffer(n_global)  # preallocated: no parameter-sized block per round
    net.copy_into(origin, params, n_global)
    adapted = adapt_global(net, params, samples, s, int(s["adapt_samples"]), result)
    result.samples = recon + adapted
    result.macs = round_macs(plan, s, recon, adapted)
    use_residual = residual if s["error_feedback"] else None
    added = use_residual if residual_applies(s, last_round) else None
    idx, values = sparse_delta(net, params, origin, n_global, float(s["top_p"]), added)
    result.payload = codec.encode(
        codec.KIND_DELTA,
        n_global,
        idx,
        values,
        int(s.get("version", 0)),
        int(s.get("round", 0)),
        min(result.samples, codec.MAX_SAMPLES),
        codec.value_encoding(s["values"]),
    )
    result.nnz = len(idx)
    if use_residual is not None:
        update_residual(net, use_residual, origin, idx, values, result.payload, n_global)
    return result


def round_macs(plan, settings, recon, adapted):
    """Multiply-accumulates of a round: cheap head-only steps, then full adaptation steps."""
    total = 0
    if recon:
        total += recon * plan.train_step_macs(head_index(plan))
    first, last = adapt_layers(plan, settings)
    total += adapted * plan.train_step_macs(first, last)
    return total
