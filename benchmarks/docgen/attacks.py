"""Hostile devices, from benchmarks/hostile.py's documents (hostile-*.json) and the fuzzing
(fuzz.json): each attack against the clean run on the same seed, the goal per attack, the sweeps
that chose the defences' settings, the agreement trust is built from, honest update norms, and
the service under attack."""

from __future__ import annotations

import numpy as np

from broker_service.observe.tables import markdown_table

from .common import NONE, Block, listed, short

AGGREGATION_NAMES = {
    "trusted": "clipped mean + trust",
    "clipped_mean": "clipped mean",
    "coverage": "coverage-aware mean",
    "mean": "mean",
    "trimmed_mean": "trimmed mean",
    "cohort_clip": "cohort-median clip",
    "undefended": "no bounds (before)",
}
GOAL = (
    "not worse than the clean run on the same seed by more than its CI95 with 1 of 20 hostile, "
    "by more than twice it with 4 of 20"
)
"""The goal an attack is held to (issue 12)."""


def metric_cell(row: dict | None) -> str:
    """A run's new-device metric ± its CI95, 'diverged', or NONE when it was not run."""
    if row is None:
        return NONE
    if row["diverged"]:
        return "diverged"
    return "%s ± %s" % (short(row["final_metric"]), short(row["ci95"]))


def harm(doc: dict, row: dict, clean: dict) -> float:
    """How much worse the attacked run is than the clean one (positive: worse)."""
    if row["diverged"]:
        return float("inf")
    diff = row["final_metric"] - clean["final_metric"]
    return diff if doc["metric"] == "mse" else -diff


def allowed(clean: dict, fraction: float) -> float:
    """The harm the goal allows: the clean run's CI95 for 1 of 20, twice it for 4 of 20."""
    return clean["ci95"] * (1 if fraction < 0.1 else 2)


def find(rows: list[dict], algorithm, aggregation, attack, fraction, seed) -> dict | None:
    """The row of one run, or None."""
    key = (algorithm, aggregation, attack, fraction, seed)
    for r in rows:
        if (r["algorithm"], r["aggregation"], r["attack"], r["fraction"], r["seed"]) == key:
            return r
    return None


def held(doc: dict, rows: list[dict], attack: str, fraction: float) -> str:
    """'k/n, +worst': on how many seeds an attack stayed within the goal against the clean run
    among `rows` (one aggregation or setting), and the worst harm; NONE when it was not run."""
    harms, kept = [], 0
    for seed in doc["seeds"]:
        clean = _run(rows, None, 0.0, seed)
        row = _run(rows, attack, fraction, seed)
        if clean is None or row is None:
            continue
        h = harm(doc, row, clean)
        harms.append(h)
        kept += h <= allowed(clean, fraction)
    if not harms:
        return NONE
    worst = max(harms)
    return "%d/%d, %s" % (
        kept,
        len(harms),
        "diverged" if worst == float("inf") else "%+.3g" % worst,
    )


def _run(rows: list[dict], attack, fraction: float, seed: int) -> dict | None:
    key = (attack, fraction, seed)
    return next((r for r in rows if (r["attack"], r["fraction"], r["seed"]) == key), None)


def within_goal(doc: dict, aggregation: str, attack: str, fraction: float) -> str:
    """`held` for TinyMetaFed with one aggregation."""
    rows = [
        r for r in doc["rows"] if (r["algorithm"], r["aggregation"]) == ("tinymetafed", aggregation)
    ]
    return held(doc, rows, attack, fraction)


def goal_table(*docs: dict) -> str:
    """Per attack and use case: the seeds on which the default (trust) and the clipped mean
    without trust stayed within the goal, and the worst harm."""
    columns = [(f, label, d) for f, label in ((0.05, "1 of 20"), (0.2, "4 of 20")) for d in docs]
    header = ["attack", *("%s, %s" % (label, d["use_case"]) for _, label, d in columns)]
    rows = [
        [
            attack,
            *(
                "%s; %s"
                % (within_goal(d, "trusted", attack, f), within_goal(d, "clipped_mean", attack, f))
                for f, _, d in columns
            ),
        ]
        for attack in docs[0]["attacks"]
    ]
    intro = (
        "Seeds within the goal (%s) and the worst harm over the seeds (MSE added, accuracy "
        "lost), for the default (clipped mean + trust) and, after the semicolon, the clipped "
        "mean without trust." % GOAL
    )
    return intro + "\n\n" + markdown_table(header, rows)


def _names(doc: dict) -> dict[str, str]:
    present = {r["aggregation"] for r in doc["rows"] if r["algorithm"] == "tinymetafed"}
    return {n: label for n, label in AGGREGATION_NAMES.items() if n in present}


def _no_federation(rows: list[dict], seed: int) -> dict | None:
    return next((r for r in rows if r["algorithm"] == "no_federation" and r["seed"] == seed), None)


def _clean_table(doc: dict, names: dict[str, str]) -> str:
    rows, seeds = doc["rows"], doc["seeds"]
    body = [["no federation", *(metric_cell(_no_federation(rows, s)) for s in seeds)]]
    for name, label in names.items():
        if name != "undefended":
            cells = [metric_cell(find(rows, "tinymetafed", name, None, 0.0, s)) for s in seeds]
            body.append([label, *cells])
    return markdown_table(["aggregation", *("seed %d" % s for s in seeds)], body)


def _attack_cell(doc: dict, aggregation: str, attack: str, fraction: float, seed: int) -> str:
    clean = find(doc["rows"], "tinymetafed", aggregation, None, 0.0, seed)
    row = find(doc["rows"], "tinymetafed", aggregation, attack, fraction, seed)
    if row is None or clean is None:
        return NONE
    if row["diverged"]:
        return "diverged ✗"
    h = harm(doc, row, clean)
    return "%s (%+.4f %s)" % (metric_cell(row), h, "✓" if h <= allowed(clean, fraction) else "✗")


def _attacked_table(doc: dict, aggregation: str) -> str | None:
    """One aggregation under every attack on every seed against its clean run; None when it
    was attacked on one seed only."""
    attacked = [r for r in doc["rows"] if r["aggregation"] == aggregation and r["attack"]]
    if len({r["seed"] for r in attacked}) < 2 and len(doc["seeds"]) > 1:
        return None
    rows = []
    for attack in doc["attacks"]:
        for fraction, label in doc["fractions"].items():
            hostile = [
                r["hostile"]
                for r in attacked
                if r["attack"] == attack and r["fraction"] == float(fraction)
            ]
            if hostile:  # attacks not run are left out
                cells = [
                    _attack_cell(doc, aggregation, attack, float(fraction), s) for s in doc["seeds"]
                ]
                rows.append([attack, "%s (%d)" % (label, hostile[0]), *cells])
    header = ["attack", "hostile", *("seed %d" % s for s in doc["seeds"])]
    return markdown_table(header, rows)


def _every_aggregation(doc: dict, names: dict[str, str], seed: int) -> str | None:
    """Every aggregation under attack on one seed; None when only one was attacked on it."""
    rows = doc["rows"]
    kinds = {r["aggregation"] for r in rows if r["seed"] == seed and r["attack"]}
    if len(kinds) < 2:
        return None
    clean = [
        metric_cell(find(rows, "tinymetafed", "mean" if n == "undefended" else n, None, 0.0, seed))
        for n in names
    ]
    body = [["none", NONE, *clean]]
    for attack in doc["attacks"]:
        for fraction, label in doc["fractions"].items():
            cells = [
                metric_cell(find(rows, "tinymetafed", n, attack, float(fraction), seed))
                for n in names
            ]
            if any(c != NONE for c in cells):
                body.append([attack, label, *cells])
    return markdown_table(["attack", "hostile", *names.values()], body)


def hostile(doc: dict) -> str:
    """The hostile-device benchmark of one use case: clean runs, each aggregation under every
    attack on every seed against its clean run, and every aggregation on a seed where several
    were attacked."""
    names = _names(doc)
    out = [
        "%s (%s), %d rounds, seeds %s, %d s of wall time. Clean runs, the new-device metric ± "
        "CI95 over the new devices:"
        % (doc["use_case"], doc["metric"], doc["rounds"], listed(doc["seeds"]), doc["seconds"]),
        _clean_table(doc, names),
    ]
    devices = next(r["devices"] for r in doc["rows"] if r["attack"])
    for aggregation, label in names.items():
        table = _attacked_table(doc, aggregation)
        if table:
            out.append(
                "%s under attack, against its clean run on the same seed (%d training devices; "
                "✓: %s):" % (label[0].upper() + label[1:], devices, GOAL)
            )
            out.append(table)
    for seed in doc["seeds"]:
        table = _every_aggregation(doc, names, seed)
        if table:
            out += ["Every aggregation under attack, seed %d:" % seed, table]
    return "\n\n".join(out)


def attacks(doc: dict) -> str:
    """What each attack of the hostile benchmark sends, as its document describes it."""
    rows = [[name, text] for name, text in doc["attacks"].items()]
    fractions = listed(doc["fractions"].values())
    return "Hostile devices: %s of the training devices.\n\n%s" % (
        fractions,
        markdown_table(["attack", "what a hostile device sends"], rows),
    )


def _columns(doc: dict, rows: list[dict]) -> list[tuple]:
    return sorted(
        {(r["attack"], r["fraction"]) for r in rows},
        key=lambda c: (c[0] is not None, list(doc["attacks"]).index(c[0]) if c[0] else -1, c[1]),
    )


def _column_name(doc: dict, attack, fraction) -> str:
    names = {float(f): label for f, label in doc["fractions"].items()}
    return "clean" if attack is None else "%s %s" % (attack, names[fraction])


def _sweep_cell(found: list[dict], validation: bool) -> str:
    if not found:
        return NONE
    kept = [r for r in found if not r["diverged"]]
    diverged = len(found) - len(kept)
    if not kept:
        return "diverged"
    test = short(float(np.mean([r["final_metric"] for r in kept])))
    cell = test
    if validation and all("validation_metric" in r for r in kept):
        cell = "%s (%s)" % (short(float(np.mean([r["validation_metric"] for r in kept]))), test)
    return cell + (" (%d diverged)" % diverged if diverged else "")


COUNTS = {"capped_rounds": "capped rounds", "downweighted": "down-weighted updates"}
"""What a sweep's last columns sum over its runs."""


def _sums(rows: list[dict]) -> list[str]:
    return [
        str(sum(r.get(k) or 0 for r in rows)) if any(k in r for r in rows) else NONE for k in COUNTS
    ]


def sweep_table(doc: dict, setting, label: str, validation: bool) -> str:
    """The runs of a sweep, one row per setting (`setting(row)` names it), one column per attack
    and fraction: the mean over the seeds (validation devices, test devices in brackets when
    `validation`), then the rounds the bounds capped and the updates trust down-weighted."""
    rows = [r for r in doc["rows"] if r["algorithm"] == "tinymetafed"]
    columns = _columns(doc, rows)
    body = []
    for name in dict.fromkeys(setting(r) for r in rows):
        mine = [r for r in rows if setting(r) == name]
        cells = [
            _sweep_cell([r for r in mine if (r["attack"], r["fraction"]) == c], validation)
            for c in columns
        ]
        body.append([name, *cells, *_sums(mine)])
    header = [label, *(_column_name(doc, a, f) for a, f in columns), *COUNTS.values()]
    return markdown_table(header, body)


def goal_sweep_table(doc: dict, setting, label: str) -> str:
    """A sweep judged by the goal: one row per setting, the clean run's mean (validation
    devices, test devices in brackets), then per attack and fraction the seeds within the goal
    against the clean run of the same setting and the worst harm (test devices)."""
    rows = [r for r in doc["rows"] if r["algorithm"] == "tinymetafed"]
    attacked = [c for c in _columns(doc, rows) if c[0] is not None]
    body = []
    for name in dict.fromkeys(setting(r) for r in rows):
        mine = [r for r in rows if setting(r) == name]
        clean = _sweep_cell([r for r in mine if r["attack"] is None], True)
        cells = [held(doc, mine, a, f) for a, f in attacked]
        body.append([name, clean, *cells, *_sums(mine)])
    header = [label, "clean", *(_column_name(doc, a, f) for a, f in attacked), *COUNTS.values()]
    return markdown_table(header, body)


def _sweep_intro(doc: dict, validation: bool) -> str:
    where = "validation devices, test devices in brackets" if validation else "test devices"
    return "%s (%s), %d rounds, mean over seeds %s (%s); %d s of wall time." % (
        doc["use_case"],
        doc["metric"],
        doc["rounds"],
        listed(doc["seeds"]),
        where,
        doc["seconds"],
    )


def clip_sweep(doc: dict) -> str:
    """The clipped mean at several clip multiples."""
    table = sweep_table(doc, lambda r: "%g" % r["clip_recent"], "clip_recent", False)
    return _sweep_intro(doc, False) + "\n\n" + table


def _trust_setting(r: dict) -> str:
    if not r.get("trust_rate"):
        return "clipped mean, no trust"
    name = "rate %g, full %g" % (r["trust_rate"], r["trust_full"])
    if r.get("trust_probation", 1) > 1:
        name += ", probation %d" % r["trust_probation"]
    return name + (", trust clip" if r.get("trust_clip") else "")


def trust_sweep(doc: dict) -> str:
    """The trust settings compared on the validation devices (the test devices beside)."""
    return _sweep_intro(doc, True) + "\n\n" + sweep_table(doc, _trust_setting, "trust", True)


def _step_setting(r: dict) -> str:
    growth = r.get("max_model_growth")
    bound = "no growth bound" if not growth else "growth bound %g×" % growth
    return "outer_lr %g, %s" % (r["outer_lr"], bound)


def step_sweep(doc: dict) -> str:
    """The clipped mean at several outer steps, clean and under attack: each attack judged by
    the goal against the clean run at the same step."""
    intro = (
        "%s (%s), %d rounds, seeds %s; %d s of wall time. Clean: the mean over the seeds on "
        "validation devices (test devices in brackets). Under attack: the seeds within the goal "
        "(%s) and the worst harm, on test devices."
        % (
            doc["use_case"],
            doc["metric"],
            doc["rounds"],
            listed(doc["seeds"]),
            doc["seconds"],
            GOAL,
        )
    )
    return intro + "\n\n" + goal_sweep_table(doc, _step_setting, "server step")


def agreement(*docs: dict) -> str:
    """Agreement with the consensus of device histories, honest against reversing devices."""
    header = [
        "use case",
        "rounds",
        "devices",
        "per update: mean ± sd",
        "below 0",
        "per device (mean of its updates): mean ± sd",
        "p5",
        "p95",
    ]
    rows = []
    for doc in docs:
        for name in ("honest", "hostile"):
            u, d = doc[name + "_updates"], doc[name + "_devices"]
            rows.append(
                [
                    doc["use_case"],
                    "%d" % doc["rounds"],
                    "%s (%d)" % (name, d["count"]),
                    "%+.3f ± %.3f" % (u["mean"], u["sd"]),
                    "%.0f %%" % (100 * u["below_zero"]),
                    "%+.3f ± %.3f" % (d["mean"], d["sd"]),
                    "%+.3f" % d["p5"],
                    "%+.3f" % d["p95"],
                ]
            )
    first = docs[0]
    intro = "Clipped mean without trust, %s of the training devices sending `%s`, seed %d." % (
        "%g %%" % (100 * first["fraction"]),
        first["attack"],
        first["seed"],
    )
    return intro + "\n\n" + markdown_table(header, rows)


def norms(doc: dict) -> str:
    """Honest update norms against ‖θ_g‖ and the median (what the bounds rest on)."""
    header = [
        "use case",
        "algorithm",
        "rounds",
        "updates",
        "‖Δ‖ median",
        "‖Δ‖ max",
        "max ÷ median",
        "‖Δ‖ ÷ ‖θ_g‖ median",
        "p99",
        "max",
        "largest ‖θ_g‖ ÷ its first",
    ]
    rows = [
        [
            r["use_case"],
            r["algorithm"],
            "%d" % r["rounds"],
            "%d" % r["updates"],
            "%.4f" % r["norm_median"],
            "%.4f" % r["norm_max"],
            "%.1f" % r["max_over_median"],
            "%.4f" % r["ratio_median"],
            "%.4f" % r["ratio_p99"],
            "%.4f" % r["ratio_max"],
            NONE if r.get("theta_growth_max") is None else "%.2f" % r["theta_growth_max"],
        ]
        for r in doc["rows"]
    ]
    intro = "Default settings, seed %d, %d s of wall time." % (doc["seed"], doc["seconds"])
    return intro + "\n\n" + markdown_table(header, rows)


def service(doc: dict) -> str:
    """The service over a real mosquitto with hostile devices among the fleet."""
    header = [
        "hostile",
        "rounds closed",
        "ran to the end",
        "wall s",
        "updates",
        "refused",
        "metric before → after",
    ]
    rows = []
    for s in doc["sessions"]:
        refused = listed("%s %d" % kv for kv in sorted(s["rejected"].items())) or "none"
        rows.append(
            [
                "%d of %d" % (s["hostile"], s.get("devices", 20)),
                "%s / %d" % (s["rounds_closed"], s["rounds_asked"]),
                "yes" if s["ran_to_the_end"] else "**no**",
                "%.1f" % s["seconds"],
                str(s["updates"]),
                refused,
                "%.3f → %.3f" % (s["metric_initial"], s["metric_final"]),
            ]
        )
    intro = "%s, %d rounds a session, seed %d." % (doc["use_case"], doc["rounds"], doc["seed"])
    return intro + "\n\n" + markdown_table(header, rows)


def fuzz(doc: dict) -> str:
    """The fuzzing run: inputs, time, targets and failures."""
    return "%s: %d inputs in %.1f s over %s; failures: %s." % (
        doc["tool"],
        doc["inputs"],
        doc["seconds"],
        listed(doc["targets"]),
        doc["failure"] or "none",
    )


def _learning(use_case: str, title: str) -> Block:
    return Block(
        "hostile_" + use_case.replace("-", "_"), title, ("hostile-%s.json" % use_case,), hostile
    )


BLOCKS = [
    _learning("sine", "Hostile devices: sine"),
    _learning("omniglot", "Hostile devices: omniglot"),
    _learning("coverage-sine", "Hostile devices: the coverage-aware mean on sine"),
    Block("hostile_attacks", "The attacks", ("hostile-sine.json",), attacks),
    Block(
        "hostile_goal",
        "Hostile devices: the goal per attack",
        ("hostile-sine.json", "hostile-omniglot.json"),
        goal_table,
    ),
    Block(
        "trust_sweep_sine",
        "Choosing the trust settings: sine",
        ("hostile-trust-sine.json",),
        trust_sweep,
    ),
    Block(
        "step_sweep_sine",
        "Choosing the outer step and the growth bound: sine",
        ("hostile-step-sine.json",),
        step_sweep,
    ),
    Block(
        "step_sweep_uncapped_sine",
        "The outer step without the growth bound: sine",
        ("hostile-step-uncapped-sine.json",),
        step_sweep,
    ),
    Block(
        "clip_sweep_sine",
        "Choosing the clip multiple: sine",
        ("hostile-clip-sine.json",),
        clip_sweep,
    ),
    Block(
        "clip_sweep_omniglot",
        "Choosing the clip multiple: omniglot",
        ("hostile-clip-omniglot.json",),
        clip_sweep,
    ),
    Block(
        "agreement",
        "Agreement with the consensus of device histories",
        ("hostile-agreement-sine.json", "hostile-agreement-omniglot.json"),
        agreement,
    ),
    Block("norms", "Honest update norms", ("hostile-norms.json",), norms),
    Block(
        "hostile_service",
        "Hostile devices against the service (mosquitto)",
        ("hostile-service.json",),
        service,
    ),
    Block("fuzz", "Fuzzing", ("fuzz.json",), fuzz),
]
