"""Training settings of each use case: the shared protocol, and the defaults of the tuned rates.

Every setting, its type, default and one-line help, and its checks are declared once, in
`TrainingSettings` (core/settings.py); `COMMON` is its defaults shared by every use case, and
`USE_CASE_SETTINGS` each use case's own values over them, with its `--quick` overrides. `REMOVED`
/ `REMOVED_VALUES` (the settings and values no longer supported, see `removed_setting` and
`drop_removed`) live in core/settings.py and are importable from here.

`TUNED` are the keys chosen per algorithm on validation devices (benchmarks/tune.py); the values
here are only the starting point before tuning (and what the service runs with). Everything
else is the protocol, the same for every algorithm. `MULTIPASS` is the multi-pass protocol the
bench reports beside the online one: (passes, head-only passes with the split on).
"""

from __future__ import annotations

from broker_service.core.settings import (
    FIELDS,
    REMOVED,
    REMOVED_VALUES,
    TrainingSettings,
    defaults,
    drop_removed,
    removed_setting,
)

__all__ = [
    "COMMON",
    "MULTIPASS",
    "REMOVED",
    "REMOVED_VALUES",
    "TUNED",
    "USE_CASE_SETTINGS",
    "drop_removed",
    "removed_setting",
    "settings_for",
]

TUNED = ("recon_lr", "adapt_lr", "outer_lr")

COMMON = {
    name: value for name, value in defaults().items() if not FIELDS[name].metadata["use_case"]
}
"""The settings every use case shares unless it sets its own: TrainingSettings' defaults (the
ones each use case sets, such as rounds, left out)."""

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


def settings_for(use_case: str, quick: bool = False, **overrides) -> dict:
    """A use case's settings: TrainingSettings' defaults, then its own, then quick, then
    overrides (None ones skipped); ValueError naming an unknown, removed or bad setting."""
    if use_case not in USE_CASE_SETTINGS:
        raise ValueError(
            "no settings for use case %r; known: %s" % (use_case, sorted(USE_CASE_SETTINGS))
        )
    own = dict(USE_CASE_SETTINGS[use_case])
    quick_part = own.pop("quick", {})
    if quick:
        own.update(quick_part)
    own.update({k: v for k, v in overrides.items() if v is not None})
    return TrainingSettings.from_dict(own).as_dict()
