"""Default training settings of each use case, shared by every algorithm (no per-side tuning).

Keys: rounds, cohort (K for TinyMetaFed, Reptile, FedAvg; TinyReptile always uses 1),
aggregation / clip_norm / clip_scale / trim (robust aggregation, see aggregate.py), clip_recent
(every update clipped to this multiple of the recent median update norm, see bounds.py),
recon_samples / adapt_samples (streamed per device round; algorithms without a split stream the
same total), recon_lr (output layer) / adapt_lr (the rest, and TinyReptile's single rate),
outer_lr (β_0), top_p, values (upload value encoding), error_feedback, joint, local_init,
inner_epochs / inner_batch (Reptile and FedAvg), eval_every, eval_devices (learning curve),
final_devices (final metric), eval_epochs / eval_head_epochs (few-shot adaptation on new
devices), and quick (overrides for `--quick`).
"""

from __future__ import annotations

COMMON = {
    "cohort": 5,
    "top_p": 10.0,
    "values": "f16",
    "error_feedback": True,
    # θ_l keeps training (at adapt_lr) during adaptation; frozen made sine's few-shot MSE 1.21x
    # TinyReptile's (benchmarks/seed_sweep.py measures both on every use case)
    "joint": True,
    "local_init": "zeros",
    "outer_lr": 1.0,
    "inner_epochs": 5,
    "inner_batch": 10,
    "eval_every": 10,
    "eval_devices": 20,
    "final_devices": 100,
    "aggregation": "mean",  # or trimmed_mean, median (robust to poisoned updates)
    "clip_norm": 0.0,  # > 0: scale every update down to at most this L2 norm first
    "clip_scale": 0.0,  # > 0: clip to this multiple of the cohort's median update norm
    "trim": 0.2,
    # the default aggregation is this clipped mean (benchmarks/hostile.py, docs/security.md)
    "clip_recent": 2.0,
}

USE_CASES = {
    "sine": {
        "rounds": 1500,
        "recon_samples": 10,
        "adapt_samples": 20,
        "outer_lr": 0.5,
        "recon_lr": 0.05,
        "adapt_lr": 0.01,
        "eval_every": 100,
        "eval_epochs": 8,
        "eval_head_epochs": 4,
        "quick": {"rounds": 100, "eval_devices": 8, "final_devices": 20, "eval_every": 25},
    },
    # cohort 3 (not 5) keeps the default bench near 2 minutes; K=5 measured the same within CI.
    "omniglot": {
        "rounds": 200,
        "cohort": 3,
        "recon_samples": 25,
        "adapt_samples": 25,
        "recon_lr": 0.1,
        "adapt_lr": 0.02,
        "eval_every": 20,
        "eval_devices": 20,
        "final_devices": 100,
        "eval_epochs": 4,
        "eval_head_epochs": 2,
        "quick": {"rounds": 20, "eval_devices": 4, "final_devices": 20, "eval_every": 10},
    },
    "kws": {
        "rounds": 200,
        "cohort": 3,
        "recon_samples": 30,
        "adapt_samples": 30,
        # higher rates (0.05/0.01) make Reptile/FedAvg drift and 0.1 diverges for every algorithm
        "recon_lr": 0.02,
        "adapt_lr": 0.005,
        "eval_every": 20,
        "eval_devices": 6,
        "final_devices": 40,
        "eval_epochs": 6,
        "eval_head_epochs": 3,
        "quick": {"rounds": 20, "eval_devices": 2, "final_devices": 4, "eval_every": 10},
    },
    "occupancy": {
        "rounds": 200,
        "recon_samples": 20,
        "adapt_samples": 20,
        "recon_lr": 0.1,
        "adapt_lr": 0.05,
        "eval_every": 10,
        "eval_devices": 20,
        "final_devices": 200,
        # one online pass over the 20 support rows; with 2+ passes every algorithm reaches ~99.5%
        "eval_epochs": 1,
        "eval_head_epochs": 1,
        "quick": {"rounds": 20, "eval_devices": 5, "final_devices": 10, "eval_every": 10},
    },
}


def settings_for(use_case: str, quick: bool = False, **overrides) -> dict:
    """A use case's settings: common, then its own, then quick, then overrides."""
    if use_case not in USE_CASES:
        raise ValueError("no settings for use case %r; known: %s" % (use_case, sorted(USE_CASES)))
    own = dict(USE_CASES[use_case])
    quick_part = own.pop("quick", {})
    merged = {**COMMON, **own}
    if quick:
        merged.update(quick_part)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return merged
