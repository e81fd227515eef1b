"""Training settings of each use case: the shared protocol, and the defaults of the tuned rates.

Keys: rounds, cohort (K for TinyMetaFed, Reptile, FedAvg; TinyReptile always uses 1),
aggregation (the sample-weighted "mean", the only one left, see aggregate.py), clip_recent
(every update clipped to this multiple of the recent median update norm, see bounds.py),
max_model_growth (θ_g's length kept within this multiple of its starting length, bounds.py),
coverage_mean (experimental, off by default: the mean of each coordinate over the devices that
sent it, see aggregate.py), server_optimiser / server_beta1 / server_beta2 / server_eps (how the
aggregated delta moves θ_g: sgd or adam, see serveropt.py; outer_lr is their step size),
trust_rate / trust_full / trust_probation / trust_clip (device trust, see trust.py and bounds.py),
recon_samples / adapt_samples (streamed per device round; algorithms without a split stream the
same total), recon_lr (θ_l's reconstruction steps, and the head's rate when new devices adapt) /
adapt_lr (the adaptation steps; the only training rate without a split; a per-sample rate, see
broker_service.sim.clients), outer_lr (β_0), top_p, values (upload value encoding),
model_values (the encoding of θ_g sent to the devices: f32, f16 or int8 with a scale;
TinyReptile always sends f32), error_feedback (the error-feedback residual, see
device_agent.round), joint, local_init, inner_epochs / inner_batch (Reptile and FedAvg),
eval_every, eval_devices (learning curve, validation devices), final_devices (final figures,
test devices), eval_epochs / eval_head_epochs (few-shot adaptation on new devices: one online
pass by default, see fewshot.py) and quick (overrides for `--quick`).

`REMOVED` names the settings (and setting values) that are no longer supported: see
`removed_setting` and `drop_removed`.

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
    # θ_l keeps training (at adapt_lr) during adaptation (the brief's `joint` setting)
    "joint": True,
    "local_init": "zeros",
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
    # the sample-weighted mean; each update clipped first (clip_recent, device trust), which is
    # the default robust aggregation (benchmarks/hostile.py, docs/trust.md)
    "aggregation": "mean",
    "clip_recent": 2.0,
    # θ_g's length kept within this multiple of its length at the start (bounds.py; 0: off)
    "max_model_growth": 3.0,
    # experimental, off by default: each coordinate's mean over the devices that sent it
    # (core/aggregate.py sparse_coverage_mean; server only)
    "coverage_mean": False,
    # the server's outer step (core/serveropt.py, docs/algorithm.md): sgd or adam
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

REMOVED: dict[str, object] = {
    "residual_decay": 1.0,
    "residual_max_away": 0,
    "head_init": "sgd",
    "head_ridge": 1.0,
    "clip_norm": 0.0,
    "clip_scale": 0.0,
    "trim": 0.2,
    "rotations": False,
}
"""Settings that are no longer supported, each with its old default: a run (or a checkpoint)
that names one at that value behaves as before, any other value is refused."""

REMOVED_VALUES: dict[str, tuple[str, ...]] = {
    "aggregation": ("trimmed_mean", "median"),
    "server_optimiser": ("momentum", "yogi"),
}
"""Values of kept settings that are no longer supported."""


def removed_setting(key: str, value: object) -> str | None:
    """`key=value` when that setting (or that value of it) is no longer supported and changes
    what a run does; None when it is supported, or a removed setting at its old default."""
    if key in REMOVED:
        old = REMOVED[key]
        same = value == old and isinstance(value, bool) == isinstance(old, bool)
        return None if same else "%s=%s" % (key, value)
    if key in REMOVED_VALUES and value in REMOVED_VALUES[key]:
        return "%s=%s" % (key, value)
    return None


def drop_removed(settings: dict) -> dict:
    """The settings without the removed keys left at their old defaults; ValueError naming the
    first removed setting (or value) that would change the run."""
    for key in sorted(settings):
        bad = removed_setting(key, settings[key])
        if bad is not None:
            raise ValueError("removed setting %s" % bad)
    return {k: v for k, v in settings.items() if k not in REMOVED}


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
