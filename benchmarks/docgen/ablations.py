"""The archived learning ablations: error feedback and stale residuals, Omniglot rotations, the
closed-form heads, and the server's outer step. Their options are no longer in the code, so the
files are kept as evidence and rendered as they are."""

from __future__ import annotations

from broker_service.observe.tables import markdown_table

from .common import NONE, Block, listed


def _stale(row: dict, key: str) -> str:
    s = row.get("staleness")
    if not s:
        return "%s / %s" % (NONE, NONE)
    return "%.2f / %.2f" % (s[key]["mean"], s[key]["median"])


def ablation_ef(doc: dict) -> str:
    """TinyMetaFed with error feedback on and off and with stale residuals aged: the test metric,
    the paired difference to the default, and how stale the residuals were."""
    header = [
        "use case",
        "variant",
        "metric online ± CI",
        "seed sd",
        "vs default (paired, > 0 better)",
        "device updates",
        "updates to target",
        "rounds away (mean / median)",
        "‖residual‖/‖Δ‖ (mean / median)",
    ]
    rows = []
    for r in doc["rows"]:
        paired = r["paired_vs_tinymetafed"]
        rows.append(
            [
                r["use_case"],
                r["variant"],
                "%.4f ± %.4f" % (r["final_metric"], r["ci95"]),
                "%.4f" % r["seed_sd"],
                "%+.4f ± %.4f" % (paired["difference"], paired["ci95"]) if paired else NONE,
                "%d" % r["updates"],
                NONE if r["to_target_updates"] is None else "%d" % r["to_target_updates"],
                _stale(r, "rounds_away"),
                _stale(r, "residual_to_delta"),
            ]
        )
    intro = (
        "Seeds %s, %.0f s of wall time. Equal rounds and equal device updates (same K, same "
        "rounds); test devices, online; the paired difference is over the same units. Rounds "
        "away: rounds a device missed before an update (first participations apart)."
        % (listed(doc["seeds"]), doc["seconds"])
    )
    return intro + "\n\n" + markdown_table(header, rows)


def rotations(doc: dict) -> str:
    """The Omniglot rotation-augmentation run: TinyMetaFed's test figures."""
    a = doc["algorithms"]["tinymetafed"]
    header = ["training classes", "seeds", "online ± CI", "seed sd", "1-shot"]
    row = [
        "%d" % doc["splits"][0]["train"]["classes"],
        listed(doc["seeds"]),
        "%.4f ± %.4f" % (a["final_metric"], a["final_metric_ci95"]),
        "%.4f" % a["final_metric_seed_sd"],
        "%.4f" % a["tests"]["online_1shot"]["mean"],
    ]
    return (
        "TinyMetaFed with every training character at four rotations as its own class; test "
        "devices unchanged.\n\n" + markdown_table(header, [row])
    )


def _to_target(row: dict) -> str:
    target = row["to_target"]
    return "%.0f" % target["fleet_energy_mj"] if target else "not reached"


def heads(doc: dict) -> str:
    """The head ablation: every variant's validation and test figures."""
    header = [
        "use case",
        "θ_l rebuilt by, adaptation",
        "validation metric",
        "test metric (online)",
        "test (multi-pass)",
        "error / no federation's",
        "mJ per update",
        "fleet mJ to target",
    ]
    rows = []
    for name, case in doc["use_cases"].items():
        for variant, row in case["rows"].items():
            rows.append(
                [
                    "%s (%s)" % (name, case["metric"]),
                    variant.replace("_", " "),
                    "%.4f" % row["validation_metric"],
                    "%.4f ± %.4f" % (row["test_online"], row["test_online_ci95"]),
                    "%.4f" % row["test_multipass"],
                    "%.3f" % row["error_ratio_to_no_federation"],
                    "%.1f" % row["energy_mj_per_update"],
                    _to_target(row),
                ]
            )
    intro = "Seeds %s, the SGD head's tuned settings, %.0f s of wall time." % (
        listed(doc["seeds"]),
        doc["seconds"],
    )
    return intro + "\n\n" + markdown_table(header, rows)


OUTER_NAMES = {
    "reptile_step": "Reptile step, plain mean (the bench's)",
    "reptile_step_wide": "Reptile step, plain mean, β₀ searched in the wide box",
    "coverage": "Reptile step, coverage-aware mean",
    "momentum": "server momentum, plain mean",
    "adam": "server Adam, plain mean",
    "yogi": "server Yogi, plain mean",
    "coverage_adam": "server Adam, coverage-aware mean",
}
"""How the outer-step ablation's configurations are named in the tables."""


def _delta(c: dict, key: str) -> str:
    vs = c.get("vs_reptile_step", {})
    return "%+.4f ± %.4f" % (vs[key]["mean"], vs[key]["ci95"]) if key in vs else NONE


def _outer_use_case(name: str, part: dict) -> str:
    line = (
        "**%s** (%s, %d rounds, K = %d, P = %g %%, %d fold%s; fleet energy spread %.2g %%, "
        "bytes %.2g %%)"
        % (
            name,
            part["metric"],
            part["rounds"],
            part["cohort"],
            part["top_p"],
            part["folds"],
            "s" if part["folds"] > 1 else "",
            100 * part["fleet_energy_spread"],
            100 * part["fleet_bytes_spread"],
        )
    )
    header = [
        "server step",
        "β₀ (per fold)",
        "online",
        "Δ online",
        "seed sd",
        "multi-pass",
        "Δ multi-pass",
        "rounds to target (validation curve)",
    ]
    rows = [
        [
            OUTER_NAMES.get(config, config),
            listed("%.3g" % v for v in c["outer_lr"].values()),
            "%.4f ± %.4f" % (c["final_metric"], c["final_metric_ci95"]),
            _delta(c, "online"),
            "%.4f" % c["final_metric_seed_sd"],
            "%.4f ± %.4f" % (c["multipass"], c["multipass_ci95"]),
            _delta(c, "multipass"),
            "not reached" if c["rounds_to_target"] is None else str(c["rounds_to_target"]),
        ]
        for config, c in part["configs"].items()
    ]
    return line + "\n\n" + markdown_table(header, rows)


def outer(doc: dict) -> str:
    """The ablation of the server's outer step, one table a use case."""
    intro = (
        "TinyMetaFed, test devices, seeds %s, %.0f s of wall time. Every row spends the same "
        "rounds and device updates, and the same fleet energy and bytes up to the compressed "
        "indices' lengths (largest spread given per use case). β₀ was searched on validation "
        "devices: %s. Δ is the paired difference to the first row over units, with its 95 %% CI."
        % (listed(doc["seeds"]), doc["seconds"], doc["search"]["design"])
    )
    parts = [_outer_use_case(name, part) for name, part in doc["use_cases"].items()]
    return "\n\n".join([intro, *parts])


BLOCKS = [
    Block("ablation_ef", "Error feedback and stale residuals", ("ablation-ef.json",), ablation_ef),
    Block(
        "omniglot_rotations",
        "Omniglot with rotation augmentation",
        ("omniglot-rotations.json",),
        rotations,
    ),
    Block("ablation_heads", "Closed-form heads", ("ablation-heads.json",), heads),
    Block(
        "ablation_heads_ridge",
        "Closed-form heads: the ridge λ on sine",
        ("ablation-heads-ridge.json",),
        heads,
    ),
    Block("ablation_outer", "The server's outer step", ("ablation-outer.json",), outer),
    Block(
        "ablation_outer_yogi", "The server's outer step: Yogi", ("ablation-outer-yogi.json",), outer
    ),
    Block(
        "ablation_outer_both",
        "The server's outer step: Adam over the coverage-aware mean",
        ("ablation-outer-both.json",),
        outer,
    ),
]
