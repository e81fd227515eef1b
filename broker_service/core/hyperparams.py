"""Training settings of each use case: the shared protocol, and the defaults of the tuned rates.

Keys: rounds, cohort (K for TinyMetaFed, Reptile, FedAvg; TinyReptile always uses 1),
aggregation / clip_norm / clip_scale / trim (robust aggregation, see aggregate.py), clip_recent
(every update clipped to this multiple of the recent median update norm, see bounds.py),
max_model_growth (θ_g's length kept within this multiple of its starting length, bounds.py),
coverage_mean (the mean of each coordinate over the devices that sent it, see aggregate.py),
server_optimiser / server_beta1 / server_beta2 / server_eps (how the aggregated delta moves θ_g:
sgd, momentum, adam or yogi, see serveropt.py; outer_lr is their step size),
trust_rate / trust_full / trust_probation / trust_clip (device trust, see trust.py and bounds.py),
recon_samples / adapt_samples (streamed per device round; algorithms without a split stream the
same total), recon_lr (θ_l's reconstruction steps, and the head's rate when new devices adapt) /
adapt_lr (the adaptation steps; the only training rate without a split; a per-sample rate, see
broker_service.sim.clients), outer_lr (β_0), top_p, values (upload value encoding),
model_values (the encoding of θ_g sent to the devices: f32, f16 or int8 with a scale;
TinyReptile always sends f32), error_feedback / residual_decay / residual_max_away (the
error-feedback residual and its staleness, see device_agent.round.residual_weight), joint,
local_init, head_init / head_ridge (how θ_l is rebuilt, device_agent.heads), inner_epochs /
inner_batch (Reptile and FedAvg), eval_every, eval_devices (learning curve, validation devices),
final_devices (final figures, test devices), eval_epochs / eval_head_epochs (few-shot adaptation
on new devices: one online pass by default, see fewshot.py), rotations (omniglot's rotation
augmentation of the meta-training classes, off by default) and quick (overrides for `--quick`).

`TUNED` are the keys chosen per algorithm on validation devices (benchmarks/tune.py); the values
here are only the starting point before tuning (and what the service runs with). Everything
else is the protocol, the same for every algorithm. `MULTIPASS` is the multi-pass protocol the
bench reports beside the online one: (passes, head-only passes with the split on).
"""

from __future__ import annotations

TUNED = ("recon_lr", "adapt_lr", "outer_lr")

COMMON = {
    "cohort": 5,
    "top_p": 10.0,
    "values": "f16",
    # θ_g sent as int8 with a scale: chosen on validation devices (benchmarks/downlink_codec.py)
    "model_values": "int8",
    "error_feedback": True,
    # the residual is multiplied by residual_decay for every round the device was away, and
    # dropped once it was away residual_max_away rounds or more (0: never); 1.0 and 0 keep it whole
    "residual_decay": 1.0,
    "residual_max_away": 0,
    # θ_l keeps training (at adapt_lr) during adaptation (the brief's `joint` setting)
    "joint": True,
    "local_init": "zeros",
    # how θ_l is rebuilt: "sgd" steps, or "closed_form" (device_agent.heads); λ of the ridge head
    "head_init": "sgd",
    "head_ridge": 1.0,
    "outer_lr": 1.0,
    "inner_epochs": 5,
    "inner_batch": 10,
    "eval_every": 10,
    "eval_devices": 20,
    "final_devices": 100,
    # new devices adapt online: one pass over the support set, batch 1; with the split on, the
    # first half of the pass fits the fresh head alone (as a round's reconstruction does)
    "eval_epochs": 1,
    "eval_head_epochs": 0.5,
    "aggregation": "mean",  # or trimmed_mean, median (robust to poisoned updates)
    "clip_norm": 0.0,  # > 0: scale every update down to at most this L2 norm first
    "clip_scale": 0.0,  # > 0: clip to this multiple of the cohort's median update norm
    "trim": 0.2,
    # the default aggregation is this clipped mean (benchmarks/hostile.py, docs/trust.md)
    "clip_recent": 2.0,
    # θ_g's length kept within this multiple of its length at the start (bounds.py; 0: off)
    "max_model_growth": 3.0,
    # the server's outer step (core/serveropt.py, docs/algorithm.md)
    "coverage_mean": False,
    "server_optimiser": "sgd",
    "server_beta1": 0.9,
    "server_beta2": 0.99,
    "server_eps": 1e-3,
    # > 0: each clipped update weighed by its device's trust (core/trust.py, docs/trust.md
    # "Device trust"); 0 turns it off
    "trust_rate": 0.02,
    "trust_full": 0.2,
    # a device's k-th update counts min(1, k / trust_probation) of its weight; an update of
    # weight w < 1 is clipped to w × the clip bound with trust_clip (bounds.py)
    "trust_probation": 3,
    "trust_clip": True,
}

# each use case's own settings, over COMMON; "quick" holds its `--quick` overrides
USE_CASE_SETTINGS = {
    "sine": {
        "rounds": 1000,
        "recon_samples": 10,
        "adapt_samples": 20,
        # chosen on validation devices clean and under attack (benchmarks/hostile.py
        # step-sweep, docs/trust.md): 1.0 beat 0.5 and 1.5 on both
        "outer_lr": 1.0,
        "recon_lr": 0.05,
        "adapt_lr": 0.01,
        "eval_every": 50,
        # a third of the 10-point support set for the head, as a round's 10 of 30 samples
        "eval_head_epochs": 0.3,
        "quick": {"rounds": 60, "eval_devices": 8, "final_devices": 20, "eval_every": 20},
    },
    "omniglot": {
        "rounds": 150,
        "cohort": 3,
        "recon_samples": 25,
        "adapt_samples": 25,
        "recon_lr": 0.1,
        "adapt_lr": 0.02,
        "eval_every": 10,
        "eval_devices": 20,
        "final_devices": 60,
        # meta-training classes augmented by rotations of 90/180/270 degrees (usecases/omniglot)
        "rotations": False,
        "quick": {"rounds": 12, "eval_devices": 4, "final_devices": 10, "eval_every": 6},
    },
    "kws": {
        "rounds": 60,
        "cohort": 3,
        "recon_samples": 30,
        "adapt_samples": 30,
        "recon_lr": 0.02,
        "adapt_lr": 0.005,
        "eval_every": 5,
        # one validation speaker a fold; two test speakers a fold
        "eval_devices": 4,
        "final_devices": 10,
        "quick": {"rounds": 6, "eval_devices": 1, "final_devices": 2, "eval_every": 3},
    },
    "occupancy": {
        "rounds": 100,
        "recon_samples": 20,
        "adapt_samples": 20,
        "recon_lr": 0.1,
        "adapt_lr": 0.05,
        "eval_every": 5,
        # three validation days, five test days: episodes cycle over the days
        "eval_devices": 6,
        "final_devices": 25,
        "quick": {"rounds": 10, "eval_devices": 3, "final_devices": 5, "eval_every": 5},
    },
}

MULTIPASS = {"sine": (8, 4), "omniglot": (4, 2), "kws": (6, 3), "occupancy": (4, 2)}


def settings_for(use_case: str, quick: bool = False, **overrides) -> dict:
    """A use case's settings: common, then its own, then quick, then overrides."""
    if use_case not in USE_CASE_SETTINGS:
        raise ValueError(
            "no settings for use case %r; known: %s" % (use_case, sorted(USE_CASE_SETTINGS))
        )
    own = dict(USE_CASE_SETTINGS[use_case])
    quick_part = own.pop("quick", {})
    merged = {**COMMON, **own}
    if quick:
        merged.update(quick_part)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return merged
