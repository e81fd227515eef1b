"""The paper's claims checked on a bench document, each with the comparisons it rests on.

Every claim is TinyMetaFed against TinyReptile (the paper's comparison), and every comparison
names its budget: per device update, at equal rounds (TinyReptile's `tinyreptile` run), at
equal device updates (its `tinyreptile_equal_updates` run of K times the rounds), or to the
validation target. A cost comparison holds when TinyMetaFed's is lower; a test-metric
comparison is paired over the same units and holds when TinyMetaFed is better beyond the 95 %
CI of the difference (a tie when the CI covers zero). A claim is *held* when all its
comparisons hold, *held with a caveat* when some do, *not held* when none does.
"""

from __future__ import annotations

import numpy as np

from broker_service.core.fewshot import MULTIPASS, ONLINE, ci95

EQUAL_UPDATES = "tinyreptile_equal_updates"


def _ratio(a, b):
    return (a / b) if a is not None and b not in (None, 0) else None


def _comparison(basis: str, tmf, other, holds, **extra) -> dict:
    return {"basis": basis, "tinymetafed": tmf, "other": other, "holds": holds, **extra}


def _cost_comparison(basis: str, tmf, other) -> dict:
    """TinyMetaFed's cost against another's: holds when lower (ratio < 1)."""
    ratio = _ratio(tmf, other)
    return _comparison(basis, tmf, other, ratio is not None and ratio < 1, ratio=ratio)


def _to_target(entry: dict, key: str):
    return entry["to_target"][key] if entry.get("to_target") else None


def _target_comparison(basis: str, tmf: dict, other: dict, key: str) -> dict:
    """Cost to reach the target: holds when TinyMetaFed gets there cheaper (or the other never
    does); fails when TinyMetaFed never does."""
    a, b = _to_target(tmf, key), _to_target(other, key)
    if a is None:
        return _comparison(basis, None, b, False, ratio=None, note="TinyMetaFed never reached")
    if b is None:
        return _comparison(basis, a, None, True, ratio=None, note="the other never reached")
    return _cost_comparison(basis, a, b)


def paired_difference(doc: dict, a: str, b: str, key: str = ONLINE) -> dict | None:
    """a's test metric minus b's over their common units (errors negated, so > 0 means a is
    better), with its 95 % CI over units."""
    algos = doc["algorithms"]
    if a not in algos or b not in algos:
        return None
    ua, ub = algos[a]["tests"][key]["per_unit"], algos[b]["tests"][key]["per_unit"]
    common = [u for u in ua if u in ub]
    sign = 1.0 if doc["metric"] != "mse" else -1.0
    diffs = np.array([sign * (ua[u] - ub[u]) for u in common])
    return {"difference": float(diffs.mean()), "ci95": ci95(diffs), "units": len(common)}


def _metric_comparison(doc: dict, basis: str, a: str, b: str, key: str = ONLINE) -> dict:
    """TinyMetaFed's test metric against b's: holds when better beyond the paired CI, None
    (a tie) when the CI covers zero, fails when worse beyond it."""
    diff = paired_difference(doc, a, b, key)
    algos = doc["algorithms"]
    tmf, other = algos[a]["tests"][key]["mean"], algos[b]["tests"][key]["mean"]
    lo = diff["difference"] - diff["ci95"]
    hi = diff["difference"] + diff["ci95"]
    holds = True if lo > 0 else (False if hi < 0 else None)
    return _comparison(basis, tmf, other, holds, **diff)


def verdict(comparisons: list[dict]) -> str:
    """held (every comparison holds), held with a caveat (some do), or not held (none does)."""
    results = [c["holds"] for c in comparisons]
    if results and all(r is True for r in results):
        return "held"
    if any(r is True for r in results):
        return "held with a caveat"
    return "not held"


def energy_comparisons(tmf: dict, tr: dict, tr_u: dict) -> list[dict]:
    """The comparisons of the energy claim: TinyMetaFed's energy per device update and its
    fleet's against TinyReptile's at equal rounds (`tr`), at equal device updates and to the
    target (`tr_u`, the equal-update run)."""
    return [
        _cost_comparison(
            "per device update", tmf["energy_mj_per_update"], tr["energy_mj_per_update"]
        ),
        _cost_comparison("fleet, equal rounds", tmf["fleet_energy_mj"], tr["fleet_energy_mj"]),
        _cost_comparison(
            "fleet, equal device updates", tmf["fleet_energy_mj"], tr_u["fleet_energy_mj"]
        ),
        _target_comparison("fleet, to the target", tmf, tr_u, "fleet_energy_mj"),
    ]


def criteria(doc: dict) -> dict:
    """The paper's claims, TinyMetaFed against TinyReptile, each with the comparisons it rests
    on (the budget each holds at) and a verdict; {} when either is missing. Costs to the target
    and at equal device updates are read from TinyReptile's equal-update run."""
    a = doc["algorithms"]
    if "tinymetafed" not in a or "tinyreptile" not in a:
        return {}
    tmf, tr = a["tinymetafed"], a["tinyreptile"]
    tr_u = a.get(EQUAL_UPDATES, tr)

    def fleet_bytes(x):
        return x["fleet_bytes_up"] + x["fleet_bytes_down"]

    claims = {
        "less_energy": ("less energy", energy_comparisons(tmf, tr, tr_u)),
        "less_communication": (
            "less communication",
            [
                _cost_comparison(
                    "upload per device update",
                    tmf["bytes_up_per_update"],
                    tr["bytes_up_per_update"],
                ),
                _cost_comparison(
                    "download per device update",
                    tmf["bytes_down_per_update"],
                    tr["bytes_down_per_update"],
                ),
                *(
                    [
                        _cost_comparison(
                            "radio bytes (MQTT, up + down) per device update",
                            tmf["radio_bytes_per_update"],
                            tr["radio_bytes_per_update"],
                        )
                    ]
                    if "radio_bytes_per_update" in tmf and "radio_bytes_per_update" in tr
                    else []
                ),
                _cost_comparison("fleet bytes, equal rounds", fleet_bytes(tmf), fleet_bytes(tr)),
                _cost_comparison(
                    "fleet bytes, equal device updates", fleet_bytes(tmf), fleet_bytes(tr_u)
                ),
                _target_comparison("fleet bytes, to the target", tmf, tr_u, "fleet_bytes"),
            ],
        ),
        "faster_convergence": (
            "faster convergence",
            [
                _target_comparison("rounds to the target", tmf, tr_u, "round"),
                _target_comparison("device updates to the target", tmf, tr_u, "updates"),
            ],
        ),
        "more_stable": (
            "more stable training",
            [
                _cost_comparison("curve sd, equal rounds", tmf["curve_std"], tr["curve_std"]),
                _cost_comparison(
                    "curve sd, equal device updates", tmf["curve_std"], tr_u["curve_std"]
                ),
            ],
        ),
        "better_few_shot": (
            "better few-shot metric",
            [
                _metric_comparison(doc, "test, online, equal rounds", "tinymetafed", "tinyreptile"),
                _metric_comparison(
                    doc,
                    "test, online, equal device updates",
                    "tinymetafed",
                    EQUAL_UPDATES if EQUAL_UPDATES in a else "tinyreptile",
                ),
                _metric_comparison(
                    doc,
                    "test, multi-pass, equal device updates",
                    "tinymetafed",
                    EQUAL_UPDATES if EQUAL_UPDATES in a else "tinyreptile",
                    MULTIPASS,
                ),
            ],
        ),
    }
    if "no_federation" in a:
        claims["beats_no_federation"] = (
            "better than no federation",
            [_metric_comparison(doc, "test, online", "tinymetafed", "no_federation")],
        )
    return {
        key: {"claim": text, "comparisons": comps, "verdict": verdict(comps)}
        for key, (text, comps) in claims.items()
    }


def claim_lines(doc: dict) -> list[str]:
    """One Markdown bullet per claim: its verdict and each comparison with its figures."""
    lines = []
    for claim in doc.get("criteria", {}).values():
        parts = [_comparison_text(doc, c) for c in claim["comparisons"]]
        lines.append("- **%s: %s** — %s." % (claim["claim"], claim["verdict"], "; ".join(parts)))
    return lines


def _fmt(value) -> str:
    if value is None:
        return "never"
    return "%.4g" % value


def _comparison_text(doc: dict, c: dict) -> str:
    mark = {True: "✓", False: "✗", None: "tie"}[c["holds"]]
    if "difference" in c:
        return "%s: %s vs %s (paired difference %+.3f ± %.3f over %d %ss) %s" % (
            c["basis"],
            _fmt(c["tinymetafed"]),
            _fmt(c["other"]),
            c["difference"],
            c["ci95"],
            c["units"],
            doc.get("unit", "unit"),
            mark,
        )
    ratio = "" if c.get("ratio") is None else " (%.2f×)" % c["ratio"]
    return "%s: %s vs %s%s %s" % (c["basis"], _fmt(c["tinymetafed"]), _fmt(c["other"]), ratio, mark)
