"""The comparison itself, from the bench's and the tuning's documents: what it ran with, the
protocol and splits, each use case's tables and learning curves, every seed alone, and the
settings the tuning chose."""

from __future__ import annotations

from broker_service.observe.tables import bench_rows, cost_rows, markdown_table, refusal_rows
from broker_service.sim.claims import claim_lines

from .common import NONE, USE_CASES, Block, bench_files, listed, tuned_files


def _heading_line(doc: dict) -> str:
    folds = ", %d folds" % doc["folds"] if doc.get("folds", 1) > 1 else ""
    return "**%s** (%s, %d rounds, K = %d, seeds %s%s, %.0f s of wall time)" % (
        doc["use_case"],
        doc["metric"],
        doc["rounds"],
        doc["cohort"],
        listed(doc["seeds"]),
        folds,
        doc["seconds"],
    )


def curve_link(use_case: str) -> str:
    """The Markdown image of a use case's learning curves (make_docs writes the file)."""
    return "![learning curves, %s](figures/curves-%s.png)" % (use_case, use_case)


def comparison(doc: dict) -> str:
    """One use case of the comparison: the test metrics, the budget, what the bounds refused,
    each claim with the comparisons it rests on, and the learning curves."""
    return "\n\n".join(
        [
            _heading_line(doc),
            markdown_table(*bench_rows(doc)),
            markdown_table(*cost_rows(doc)),
            markdown_table(*refusal_rows(doc)),
            "\n".join(claim_lines(doc)),
            curve_link(doc["use_case"]),
        ]
    )


def _aggregation(settings: dict) -> str:
    clip = settings.get("clip_recent") or 0
    name = settings.get("aggregation", "mean")
    if name == "mean" and clip:
        return "clipped mean (clip_recent %g)" % clip
    return name


def _trust(settings: dict) -> str:
    rate = settings.get("trust_rate")
    if rate is None:
        return NONE
    return "on (trust_rate %g)" % rate if rate else "off"


def _growth(settings: dict) -> str:
    growth = settings.get("max_model_growth")
    if growth is None:
        return NONE
    return "%g× its starting length" % growth if growth else "off"


def setup_table(*benches: dict) -> str:
    """What each use case's comparison ran with: budget, seeds, and the server's defences as
    the documents record them (TinyMetaFed's settings)."""
    header = [
        "use case",
        "rounds",
        "K",
        "seeds",
        "folds",
        "aggregation",
        "device trust",
        "growth bound",
        "θ_g sent as",
        "Top-P",
    ]
    rows = []
    for b in benches:
        s = b.get("settings", {})
        rows.append(
            [
                b["use_case"],
                "%d" % b["rounds"],
                "%d" % b["cohort"],
                listed(b["seeds"]),
                "%d" % b.get("folds", 1),
                _aggregation(s),
                _trust(s),
                _growth(s),
                s.get("model_values", NONE),
                "%g %%" % s["top_p"] if "top_p" in s else NONE,
            ]
        )
    return markdown_table(header, rows)


def _split_part(value) -> str:
    """One part of a split (training, validation or test) in words."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return listed(value)
    if "alphabets" in value:
        return "%s (%d characters)" % (listed(value["alphabets"]), value["characters"])
    days = sorted(value)
    return "%s to %s (%d days)" % (days[0], days[-1], len(days))


def splits_table(*benches: dict) -> str:
    """The three disjoint sets of devices of every use case (and fold)."""
    header = ["use case", "fold", "meta-training", "validation", "test"]
    rows = []
    for b in benches:
        for i, split in enumerate(b["splits"]):
            rows.append(
                [
                    b["use_case"],
                    "%d of %d" % (split.get("fold", i), len(b["splits"])),
                    *(_split_part(split[k]) for k in ("train", "validation", "test")),
                ]
            )
    return markdown_table(header, rows)


def protocol_table(*benches: dict) -> str:
    """How each use case is measured: the curve, the final test, online and multi-pass
    adaptation, shots, the unit of the confidence interval, the target and the board."""
    header = [
        "use case",
        "learning curve",
        "final figures",
        "online",
        "multi-pass",
        "shots",
        "CI",
        "target (validation)",
        "energy profile",
    ]
    rows = []
    for b in benches:
        p = b["protocol"]
        rows.append(
            [
                "%s (%s)" % (b["use_case"], b["metric"]),
                p["learning_curve"],
                p["final"],
                p["online"],
                p["multipass"],
                listed(p["shots"]),
                "%s; %d units" % (p["ci"], b["algorithms"]["tinymetafed"].get("units", 0)),
                "%g" % b["target"],
                b.get("board", NONE),
            ]
        )
    return markdown_table(header, rows)


def protocol(*benches: dict) -> str:
    """The splits and the measuring protocol, as the bench documents record them."""
    return splits_table(*benches) + "\n\n" + protocol_table(*benches)


def seed_sweep(doc: dict) -> str:
    """Every use case and seed alone: each entry's test metric and each claim's verdict."""
    names = list(dict.fromkeys(n for r in doc["rows"] for n in r["final_metric"]))
    claims = list(dict.fromkeys(k for r in doc["rows"] for k in r["verdicts"]))
    metrics = markdown_table(
        ["use case", "seed", *names],
        [
            [
                "%s (%s)" % (r["use_case"], r["metric"]),
                "%d" % r["seed"],
                *("%.4f" % r["final_metric"][n] if n in r["final_metric"] else NONE for n in names),
            ]
            for r in doc["rows"]
        ],
    )
    verdicts = markdown_table(
        ["use case", "seed", *(c.replace("_", " ") for c in claims)],
        [
            [r["use_case"], "%d" % r["seed"], *(r["verdicts"].get(c, NONE) for c in claims)]
            for r in doc["rows"]
        ],
    )
    return "Seeds %s, %.0f s of wall time in all.\n\n%s\n\n%s" % (
        listed(doc["seeds"]),
        doc["seconds"],
        metrics,
        verdicts,
    )


def _on_edge(algorithm: dict) -> str:
    edges = algorithm.get("on_edge")
    if edges is None:
        return NONE
    return listed("%s %s" % kv for kv in sorted(edges.items())) or "none"


def tuning_table(*docs: dict) -> str:
    """The chosen settings of every algorithm (per fold) with their validation metric, and
    which chosen rate lies on an edge of the search box where the document says."""
    edges = any("on_edge" in a for d in docs for f in d["folds"] for a in f["algorithms"].values())
    header = ["use case", "fold", "algorithm", "recon_lr", "adapt_lr", "outer_lr"]
    header += ["validation metric"] + (["on the box's edge"] if edges else [])
    rows = []
    for doc in docs:
        for fold in doc["folds"]:
            for name, a in fold["algorithms"].items():
                c = a["chosen"]
                row = [doc["use_case"], "%d" % fold["fold"], name]
                row += [str(c.get(k, NONE)) for k in ("recon_lr", "adapt_lr", "outer_lr")]
                row.append("%.4f" % a["validation_metric"])
                rows.append(row + ([_on_edge(a)] if edges else []))
    return markdown_table(header, rows) + "\n\n" + _tuning_cost(docs)


def _tuning_cost(docs: tuple[dict, ...]) -> str:
    worker = listed(
        "%s %.0f s" % (d["use_case"], sum(r["worker_seconds"] for r in d["runs"])) for d in docs
    )
    runs = docs[0]["runs"]
    wall = sum(r["wall_seconds_all_use_cases"] for r in runs)
    return (
        "Worker time: %s; wall time for the use cases together: %.0f min on %d workers (%d run%s)."
        % (
            worker,
            wall / 60.0,
            runs[-1]["workers"],
            len(runs),
            "s" if len(runs) > 1 else "",
        )
    )


def tuning_design(*docs: dict) -> str:
    """How the settings were searched: the design, the box, the candidates, the score and the
    budget of each use case (the same for every algorithm)."""
    search = docs[0]["search"]
    box = listed("%s %g–%g" % (k, lo, hi) for k, (lo, hi) in search["box"].items())
    lines = [
        "- Design: %s." % search["design"],
        "- Box (log scale): %s." % box,
        "- Candidates: %d in stage one and %d in stage two, per algorithm and fold; search seed %d."
        % (search["candidates"], search["refinements"], search["search_seed"]),
        "- Score: %s." % search["score"],
    ]
    lines += ["- Budget, %s: %s." % (d["use_case"], d["search"]["budget"]) for d in docs]
    return "\n".join(lines)


def _settings_text(settings: dict) -> str:
    return listed("%s %s" % kv for kv in settings.items())


def demo_settings(doc: dict) -> str:
    """The demo's session settings: every candidate's final over round-0 validation MSE (mean and
    worst seed), its device updates and refused updates, the choice and the settings before."""
    by_point: dict[str, list[dict]] = {}
    for row in doc["candidates"]:
        by_point.setdefault(_settings_text(row["settings"]), []).append(row)
    chosen = _settings_text(doc["chosen"]["settings"])
    before = _settings_text(doc["before"]["settings"]) if "before" in doc else None
    rows = [
        [
            name,
            "%d" % runs[0]["updates"],
            "%.3f" % (sum(r["ratio"] for r in runs) / len(runs)),
            "%.3f" % max(r["ratio"] for r in runs),
            "%d" % sum(r.get("refused_updates", 0) for r in runs),
            "chosen" if name == chosen else ("before" if name == before else ""),
        ]
        for name, runs in by_point.items()
    ]
    header = [
        "settings",
        "device updates",
        "final / round 0, mean",
        "worst seed",
        "refused",
        "choice",
    ]
    intro = "%s: %s; %s; seeds %s; the rule: %s (target_ratio %g); %.0f s of wall time." % (
        doc["use_case"],
        doc["fleet"],
        doc["split"],
        listed(doc["seeds"]),
        doc["rule"],
        doc["target_ratio"],
        doc["seconds"],
    )
    return intro + "\n\n" + markdown_table(header, rows)


BLOCKS = [
    Block("bench_setup", "What the comparison ran with", bench_files(), setup_table),
    Block("protocol", "Splits and protocol", bench_files(), protocol),
    *(
        Block("comparison_" + u, "The comparison: " + u, ("bench-%s.json" % u,), comparison)
        for u in USE_CASES
    ),
    Block("seed_sweep", "Every seed alone", ("seed-sweep.json",), seed_sweep),
    Block("tuning", "Settings chosen on validation devices", tuned_files(), tuning_table),
    Block("tuning_design", "How the settings were searched", tuned_files(), tuning_design),
    Block("demo_settings", "The demo's session settings", ("demo-settings.json",), demo_settings),
]
