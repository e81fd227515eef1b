"""Regenerate the figures of docs/benchmarks.md from the JSON in benchmarks/results/, and the
learning-curve plots docs/figures/curves-<use case>.png (metric against device updates and
against fleet energy, on validation devices).

.venv/bin/python benchmarks/make_docs.py            # print the generated part
.venv/bin/python benchmarks/make_docs.py --write    # replace it in docs/benchmarks.md
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker_service.sim.bench import format_markdown  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "docs" / "figures"
USE_CASES = ("sine", "omniglot", "kws", "occupancy")
CLAIMS = (
    ("less_energy", "less energy"),
    ("less_communication", "less communication"),
    ("faster_convergence", "faster convergence"),
    ("more_stable", "more stable training"),
    ("better_few_shot", "better few-shot metric"),
    ("beats_no_federation", "better than no federation"),
)


def load(name: str):
    path = Path(os.environ.get("TINYMETAFED_RESULTS", RESULTS)) / name
    return json.loads(path.read_text()) if path.exists() else None


def device_table(doc) -> str:
    lines = [
        "| use case | params | MACs/sample | step ms (native) | step ms (plain) | native "
        "speed-up | step ms (CPython) | peak heap B | payload B | closed-form head: step ms "
        "(× SGD head's), peak heap B |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        closed = r.get("closed_form")
        lines.append(
            "| %s | %d | %d | %.2f | %.2f | %.2fx | %.2f | %d | %d | %s |"
            % (
                r["use_case"],
                r["params"],
                r["macs_per_sample"],
                r["step_ms"],
                r["step_ms_plain"],
                r["native_speedup"],
                r["step_ms_cpython"],
                r["peak_heap_bytes"],
                r["payload_bytes"],
                "%.2f (×%.2f), %d"
                % (closed["step_ms"], closed["step_ratio"], closed["peak_heap_bytes"])
                if closed
                else "–",
            )
        )
    return "\n".join(lines)


def heads_table(doc) -> str:
    """The head ablation (ablation-heads.json): every variant's validation and test figures."""
    lines = [
        "\n## Closed-form heads: ablation (seeds %s, tuned settings of the SGD head, %.0f s)\n"
        % (", ".join(str(s) for s in doc["seeds"]), doc["seconds"]),
        "| use case | θ_l rebuilt by, adaptation | validation metric | test metric (online) "
        "| test (multi-pass) | error / no federation's | mJ per update | fleet mJ to target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, case in doc["use_cases"].items():
        for variant, row in case["rows"].items():
            target = row["to_target"]
            lines.append(
                "| %s (%s) | %s | %.4f | %.4f ± %.4f | %.4f | %s | %.1f | %s |"
                % (
                    name,
                    case["metric"],
                    variant.replace("_", " "),
                    row["validation_metric"],
                    row["test_online"],
                    row["test_online_ci95"],
                    row["test_multipass"],
                    "%.3f" % row["error_ratio_to_no_federation"],
                    row["energy_mj_per_update"],
                    "%.0f" % target["fleet_energy_mj"] if target else "not reached",
                )
            )
    return "\n".join(lines)


def _figure(x: float) -> str:
    """A positive figure with three significant digits at most, never in e-notation."""
    if x >= 100:
        return f"{x:,.0f}"
    return "%.3g" % x if x >= 0.001 else "%.1g" % x


BOARD_NAMES = {"nrf52840": "nRF52840", "esp32": "ESP32", "rp2040": "Pico W"}


def device_energy_table(doc) -> str:
    """The fitted compute cost and one device round's time and energy on each board profile,
    MicroPython kernel / compiled kernel (docs/device.md; from device-bench.json)."""
    f = doc["fit"]
    boards = list(f["boards"])
    names = [BOARD_NAMES.get(b, b) for b in boards]
    host = (
        " (%.0f cycles at the host's %.2f GHz)" % (f["host_cycles_per_mac"], f["host_hz"] / 1e9)
        if f.get("host_hz")
        else ""
    )
    lines = [
        "Fitted on %d step kinds: %.0f ns per MAC on the bench host%s, rms error %.0f %% (with a "
        "term per parameter updated: %.0f %%, not used). The pyboard takes %.0fx as long as the "
        "host in perf_bench, so %.0f cycles per MAC on its Cortex-M4F (device_agent/energy.py "
        "uses %.0f). Cycles per MAC, MicroPython / compiled: %s.\n"
        % (
            f["points"],
            1e9 * f["seconds_per_mac"],
            host,
            100 * f["rms_relative_error"],
            100 * f["two_terms"]["rms_relative_error"],
            f["perf_bench"]["slowdown"],
            f["reference_cycles_per_mac"],
            f["model_reference_cycles_per_mac"],
            "; ".join(
                "%s %.0f / %.0f"
                % (BOARD_NAMES.get(b, b), f["boards"][b]["micropython"], f["boards"][b]["compiled"])
                for b in boards
            ),
        ),
        "| use case | step ms (unix port) | MACs/round | B up / down | "
        + " | ".join("%s s | %s mJ (radio)" % (n, n) for n in names)
        + " |",
        "|---|---|---|---|" + "---|---|" * len(boards),
    ]
    for r in doc["results"]:
        cells = [
            r["use_case"],
            "%.2f" % r["step_ms"],
            f"{r['round_macs']:,}",
            "%d / %d" % (r["payload_bytes"], r["model_bytes"] + r["command_bytes"]),
        ]
        for b in boards:
            mp, cc = r["energy"][b]["micropython"], r["energy"][b]["compiled"]
            cells.append("%s / %s" % (_figure(mp["compute_s"]), _figure(cc["compute_s"])))
            cells.append(
                "%s / %s (%s)"
                % (_figure(mp["energy_mj"]), _figure(cc["energy_mj"]), _figure(mp["radio_mj"]))
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "\nOne device round (10 reconstruction and 20 adaptation samples). Each board's cells: "
        "MicroPython kernel / compiled kernel, compute seconds and energy; radio: the round's MQTT "
        "exchange (model and command down, update up) with its TCP/IP and link framing."
    )
    return "\n".join(lines)


def bound_table(doc) -> str:
    lines = [
        "| use case | n | k | values | payload B | bound B | ratio | ratio (body) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            "| %s | %d | %d | %s | %d | %.1f | %.2f | %.2f |"
            % (
                r["use_case"],
                r["n"],
                r["k"],
                r["values"],
                r["payload_bytes"],
                r["bound_bytes"],
                r["ratio_with_header"],
                r["ratio_body"],
            )
        )
    return "\n".join(lines)


def claims_table(benches: list[dict]) -> str:
    """One row per claim, one column per use case: the verdict on all seeds pooled, and how
    many single seeds agree."""
    lines = [
        "| claim | %s |" % " | ".join(b["use_case"] for b in benches),
        "|---|%s" % ("---|" * len(benches)),
    ]
    for key, text in CLAIMS:
        cells = []
        for b in benches:
            claim = b["criteria"].get(key)
            if not claim:
                cells.append("–")
                continue
            per_seed = [v.get(key) for v in b.get("per_seed_verdicts", {}).values()]
            same = sum(1 for v in per_seed if v == claim["verdict"])
            cells.append(
                claim["verdict"] + (" (%d/%d seeds)" % (same, len(per_seed)) if per_seed else "")
            )
        lines.append("| %s | %s |" % (text, " | ".join(cells)))
    return "\n".join(lines)


FEDERATED = ("tinymetafed", "tinyreptile", "tinyreptile_equal_updates", "reptile", "fedavg")
"""The tuned federated runs of a bench (TinyReptile twice: equal rounds, equal device updates)."""
EQUAL_UPDATES = ("tinymetafed", "tinyreptile_equal_updates", "reptile", "fedavg")
"""The runs that spend the same device updates."""


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if metric == "mse" else a > b


def goals_table(benches: list[dict]) -> str:
    """The goals of "win honestly" (issue 14) per use case, from the comparison's JSON: who
    reaches the target with the least fleet energy, who ends best at equal device updates,
    TinyMetaFed's error against no federation's and its upload against TinyReptile's."""
    lines = [
        "| use case | least fleet energy to the target (TinyMetaFed's) | best at equal device "
        "updates (TinyMetaFed's) | TinyMetaFed's error / no federation's | upload per update, "
        "TinyReptile / TinyMetaFed |",
        "|---|---|---|---|---|",
    ]
    for b in benches:
        algos, metric = b["algorithms"], b["metric"]
        reached = {
            a: algos[a]["to_target"]["fleet_energy_mj"]
            for a in FEDERATED
            if a in algos and algos[a].get("to_target")
        }
        tmf = reached.get("tinymetafed")
        if reached:
            least = min(reached, key=reached.get)
            energy = "%s, %.3g J (%s)" % (
                least,
                reached[least] / 1e3,
                "%.3g J" % (tmf / 1e3) if tmf else "not reached",
            )
        else:
            energy = "none reached it"
        final = {a: algos[a]["final_metric"] for a in EQUAL_UPDATES if a in algos}
        best = final["tinymetafed"]
        winner = "tinymetafed"
        for a, v in final.items():
            if _better(metric, v, best):
                best, winner = v, a
        ends = "%s, %.4g (%.4g)" % (winner, best, final["tinymetafed"])
        nf = algos["no_federation"]["final_metric"]
        ours = final["tinymetafed"]
        error = ours / nf if metric == "mse" else (1 - ours) / (1 - nf)
        upload = (
            algos["tinyreptile"]["bytes_up_per_update"]
            / algos["tinymetafed"]["bytes_up_per_update"]
        )
        lines.append(
            "| %s (%s) | %s | %s | %.2f | %.1f× |"
            % (b["use_case"], metric, energy, ends, error, upload)
        )
    return "\n".join(lines)


def tuning_table(docs: list[dict]) -> str:
    """The chosen settings of every algorithm (per fold) with their validation metric."""
    lines = [
        "| use case | fold | algorithm | recon_lr | adapt_lr | outer_lr | validation metric |",
        "|---|---|---|---|---|---|---|",
    ]
    for doc in docs:
        for fold in doc["folds"]:
            for name, a in fold["algorithms"].items():
                c = a["chosen"]
                lines.append(
                    "| %s | %d | %s | %s | %s | %s | %.4f |"
                    % (
                        doc["use_case"],
                        fold["fold"],
                        name,
                        c.get("recon_lr", "–"),
                        c.get("adapt_lr", "–"),
                        c.get("outer_lr", "–"),
                        a["validation_metric"],
                    )
                )
    worker = ", ".join(
        "%s %.0f s" % (d["use_case"], sum(r["worker_seconds"] for r in d["runs"])) for d in docs
    )
    runs = docs[0]["runs"]
    wall = sum(r["wall_seconds_all_use_cases"] for r in runs)
    search = docs[0]["search"]
    lines.append(
        "\n%d + %d candidates per algorithm and fold (%s), each meta-trained for the bench's "
        "budget in device updates and scored by its mean metric on the validation episodes "
        "(online protocol). Worker time: %s; wall time for the four use cases: %.0f min on %d "
        "workers (%d run%s, on a machine shared with other jobs)."
        % (
            search["candidates"],
            search["refinements"],
            search["design"],
            worker,
            wall / 60.0,
            runs[-1]["workers"],
            len(runs),
            "s" if len(runs) > 1 else "",
        )
    )
    return "\n".join(lines)


def curve_figure(doc: dict) -> str:
    """Write the learning curves of a bench document against device updates and against fleet
    energy; returns the image's path relative to docs/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.4, 3.4))
    for name, a in doc["algorithms"].items():
        curve = a["curve"]
        ys = [p["metric"] for p in curve]
        if name == "no_federation":
            for ax in axes:
                ax.axhline(ys[0], color="grey", linestyle=":", label=name)
            continue
        axes[0].plot([p["updates"] for p in curve], ys, label=name)
        axes[1].plot([p["fleet_energy_mj"] for p in curve], ys, label=name)
    for ax, xlabel in zip(axes, ("device updates", "fleet energy (mJ)"), strict=True):
        ax.axhline(doc["target"], color="black", linewidth=0.5)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("%s (validation)" % doc["metric"], fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        "%s: mean over seeds %s" % (doc["use_case"], ",".join(map(str, doc["seeds"]))),
        fontsize=10,
    )
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / ("curves-%s.png" % doc["use_case"])
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return "figures/" + path.name


AGGREGATION_NAMES = {
    "trusted": "clipped mean + trust",
    "clipped_mean": "clipped mean",
    "mean": "mean",
    "trimmed_mean": "trimmed mean",
    "cohort_clip": "cohort-median clip",
    "undefended": "no bounds (before)",
}


def _short(value: float) -> str:
    """4 decimals, or 3 significant digits for a value that blew up."""
    return "%.4f" % value if abs(value) < 1000 else "%.3g" % value


def _metric(row) -> str:
    if row is None:
        return "–"
    if row["diverged"]:
        return "diverged"
    return "%s ± %s" % (_short(row["final_metric"]), _short(row["ci95"]))


def hostile_harm(doc, row, clean) -> float:
    """How much worse the attacked run is than the clean one (positive: worse)."""
    if row["diverged"]:
        return float("inf")
    diff = row["final_metric"] - clean["final_metric"]
    return diff if doc["metric"] == "mse" else -diff


def _hostile_row(rows, algorithm, aggregation, attack, fraction, seed):
    """The row of one hostile-benchmark run, or None."""
    key = (algorithm, aggregation, attack, fraction, seed)
    return next(
        (
            r
            for r in rows
            if (r["algorithm"], r["aggregation"], r["attack"], r["fraction"], r["seed"]) == key
        ),
        None,
    )


def _within_goal(doc, aggregation, attack, fraction) -> str:
    """'k/n, +worst': on how many seeds an attack stayed within the goal (the clean run's CI95
    for 1 of 20, twice it for 4 of 20), and the worst harm; '–' when it was not run."""
    rows = doc["rows"]
    harms, held = [], 0
    for seed in doc["seeds"]:
        clean = _hostile_row(rows, "tinymetafed", aggregation, None, 0.0, seed)
        row = _hostile_row(rows, "tinymetafed", aggregation, attack, fraction, seed)
        if clean is None or row is None:
            continue
        harm = hostile_harm(doc, row, clean)
        harms.append(harm)
        held += harm <= clean["ci95"] * (1 if fraction < 0.1 else 2)
    if not harms:
        return "–"
    worst = max(harms)
    return "%d/%d, %s" % (
        held,
        len(harms),
        "diverged" if worst == float("inf") else "%+.3g" % worst,
    )


def hostile_goal_table(docs) -> str:
    """Per attack and use case: the seeds on which the default (trust) and the clipped mean
    without trust stayed within the goal, and the worst harm."""
    fractions = [(0.05, "1 of 20"), (0.2, "4 of 20")]
    columns = [(f, label, d) for f, label in fractions for d in docs]
    out = [
        "\n## Hostile devices: the goal per attack\n",
        "Seeds within the goal (not worse than the clean run on the same seed by more than "
        "its CI95 with 1 of 20 hostile, by more than twice it with 4 of 20) and the worst harm "
        "over the seeds (MSE added, accuracy lost), for the default (clipped mean + trust) and, "
        "after the semicolon, the clipped mean without trust:\n",
        "| attack | "
        + " | ".join("%s, %s" % (label, d["use_case"]) for _, label, d in columns)
        + " |",
        "|---|" + "---|" * len(columns),
    ]
    for attack in docs[0]["attacks"]:
        cells = []
        for fraction, _, doc in columns:
            trusted = _within_goal(doc, "trusted", attack, fraction)
            plain = _within_goal(doc, "clipped_mean", attack, fraction)
            cells.append("%s; %s" % (trusted, plain))
        out.append("| %s | %s |" % (attack, " | ".join(cells)))
    return "\n".join(out)


def hostile_tables(doc) -> str:
    """The hostile-device benchmark of one use case: clean runs, the default under every attack
    on every seed against its clean run, and every aggregation under attack on the first seed."""
    rows = doc["rows"]
    seeds = doc["seeds"]
    present = {r["aggregation"] for r in rows if r["algorithm"] == "tinymetafed"}
    names = {n: label for n, label in AGGREGATION_NAMES.items() if n in present}

    def no_federation(seed):
        return next(
            (r for r in rows if r["algorithm"] == "no_federation" and r["seed"] == seed), None
        )

    def find(algorithm, aggregation, attack, fraction, seed):
        return _hostile_row(rows, algorithm, aggregation, attack, fraction, seed)

    first = next(r for r in rows if r["attack"])
    out = [
        "\n## Hostile devices: %s (%s, %d rounds, seeds %s, %d s)\n"
        % (
            doc["use_case"],
            doc["metric"],
            doc["rounds"],
            ", ".join(map(str, seeds)),
            doc["seconds"],
        ),
        "Clean runs, the new-device metric ± CI95 over the new devices:\n",
        "| aggregation | " + " | ".join("seed %d" % s for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    out.append("| no federation | " + " | ".join(_metric(no_federation(s)) for s in seeds) + " |")
    for name, label in names.items():
        if name != "undefended":
            cells = [_metric(find("tinymetafed", name, None, 0.0, s)) for s in seeds]
            out.append("| %s | %s |" % (label, " | ".join(cells)))
    for aggregation, name in names.items():
        attacked = [r for r in rows if r["aggregation"] == aggregation and r["attack"]]
        if len({r["seed"] for r in attacked}) < 2 and len(seeds) > 1:
            continue  # on one seed only: in the seed's table below
        out.append(
            "\n%s under attack, against its clean run on the same seed (%d training devices; "
            "✓: not worse than the clean run by more than its CI95 for 1 of 20, by more than "
            "twice it for 4 of 20):\n" % (name[0].upper() + name[1:], first["devices"])
        )
        out.append("| attack | hostile | " + " | ".join("seed %d" % s for s in seeds) + " |")
        out.append("|---|---|" + "---|" * len(seeds))
        for attack in doc["attacks"]:
            for fraction, label in doc["fractions"].items():
                cells = []
                hostile = None
                for seed in seeds:
                    clean = find("tinymetafed", aggregation, None, 0.0, seed)
                    row = find("tinymetafed", aggregation, attack, float(fraction), seed)
                    if row is None or clean is None:
                        cells.append("–")
                        continue
                    hostile = row["hostile"]
                    harm = hostile_harm(doc, row, clean)
                    allowed = clean["ci95"] * (1 if float(fraction) < 0.1 else 2)
                    cells.append(
                        "%s (%+.4f %s)" % (_metric(row), harm, "✓" if harm <= allowed else "✗")
                        if not row["diverged"]
                        else "diverged ✗"
                    )
                if hostile is not None:  # attacks not run are left out
                    out.append(
                        "| %s | %s (%s) | %s |" % (attack, label, hostile, " | ".join(cells))
                    )
    for seed in seeds:
        kinds = {r["aggregation"] for r in rows if r["seed"] == seed and r["attack"]}
        if len(kinds) < 2:
            continue
        out.append("\nEvery aggregation under attack, seed %d:\n" % seed)
        out.append("| attack | hostile | " + " | ".join(names.values()) + " |")
        out.append("|---|---|" + "---|" * len(names))
        out.append(
            "| none | – | %s |"
            % " | ".join(
                _metric(find("tinymetafed", "mean" if n == "undefended" else n, None, 0.0, seed))
                for n in names
            )
        )
        for attack in doc["attacks"]:
            for fraction, label in doc["fractions"].items():
                cells = [
                    _metric(find("tinymetafed", n, attack, float(fraction), seed)) for n in names
                ]
                if any(c != "–" for c in cells):
                    out.append("| %s | %s | %s |" % (attack, label, " | ".join(cells)))
    return "\n".join(out)


def clip_sweep_table(doc) -> str:
    """The clipped mean at several clip multiples: the metric averaged over the seeds."""
    rows = doc["rows"]
    clips = sorted({r["clip_recent"] for r in rows})
    columns = [(None, 0.0)] + sorted(
        {(r["attack"], r["fraction"]) for r in rows if r["attack"]},
        key=lambda c: (list(doc["attacks"]).index(c[0]), c[1]),
    )
    names = {float(f): label for f, label in doc["fractions"].items()}
    out = [
        "\n## Choosing the clip multiple: %s (%s, mean over seeds %s; measured with the code "
        "and settings of its time, not re-run since)\n"
        % (doc["use_case"], doc["metric"], ", ".join(map(str, doc["seeds"]))),
        "| clip_recent | "
        + " | ".join("clean" if a is None else "%s %s" % (a, names[f]) for a, f in columns)
        + " |",
        "|---|" + "---|" * len(columns),
    ]
    for clip in clips:
        cells = []
        for attack, fraction in columns:
            found = [
                r
                for r in rows
                if r["clip_recent"] == clip and r["attack"] == attack and r["fraction"] == fraction
            ]
            values = [r["final_metric"] for r in found if not r["diverged"]]
            diverged = len(found) - len(values)
            cell = _short(float(np.mean(values))) if values else "–"
            cells.append(cell + (" (%d diverged)" % diverged if diverged else ""))
        out.append("| %g | %s |" % (clip, " | ".join(cells)))
    return "\n".join(out)


def trust_sweep_table(doc) -> str:
    """The trust settings compared on the validation devices (and the test devices beside)."""
    rows = doc["rows"]
    columns = sorted(
        {(r["attack"], r["fraction"]) for r in rows},
        key=lambda c: (c[0] is not None, c[0] or "", c[1]),
    )
    names = {float(f): label for f, label in doc["fractions"].items()}

    def setting(r):
        if not r.get("trust_rate"):
            return "clipped mean, no trust"
        name = "rate %g, full %g" % (r["trust_rate"], r["trust_full"])
        if r.get("trust_probation", 1) > 1:
            name += ", probation %d" % r["trust_probation"]
        return name + (", trust clip" if r.get("trust_clip") else "")

    settings = list(dict.fromkeys(setting(r) for r in rows))
    out = [
        "\n## Choosing the trust settings: %s (%s, seeds %s; validation devices, test devices "
        "in brackets)\n" % (doc["use_case"], doc["metric"], ", ".join(map(str, doc["seeds"]))),
        "| trust | "
        + " | ".join("clean" if a is None else "%s %s" % (a, names[f]) for a, f in columns)
        + " | down-weighted updates |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for name in settings:
        cells = []
        weighed = []
        for attack, fraction in columns:
            found = [
                r
                for r in rows
                if setting(r) == name and r["attack"] == attack and r["fraction"] == fraction
            ]
            if not found or any(r["diverged"] for r in found):
                cells.append("diverged" if found else "–")
                continue
            val = np.mean([r["validation_metric"] for r in found])
            test = np.mean([r["final_metric"] for r in found])
            cells.append("%s (%s)" % (_short(float(val)), _short(float(test))))
            weighed.extend(r.get("downweighted", 0) for r in found)
        out.append("| %s | %s | %s |" % (name, " | ".join(cells), sum(weighed)))
    return "\n".join(out)


def agreement_table(docs) -> str:
    """Agreement with the consensus of device histories, honest against reversed devices."""
    out = [
        "\n## Agreement with the consensus of device histories (clipped mean, 4 of 20 "
        "reversing, seed 0)\n",
        "| use case | rounds | devices | per update: mean ± sd | below 0 | per device (mean of "
        "its updates): mean ± sd | p5 | p95 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for doc in docs:
        for name in ("honest", "hostile"):
            u, d = doc[name + "_updates"], doc[name + "_devices"]
            out.append(
                "| %s | %d | %s (%d) | %+.3f ± %.3f | %.0f %% | %+.3f ± %.3f | %+.3f | %+.3f |"
                % (
                    doc["use_case"],
                    doc["rounds"],
                    name,
                    d["count"],
                    u["mean"],
                    u["sd"],
                    100 * u["below_zero"],
                    d["mean"],
                    d["sd"],
                    d["p5"],
                    d["p95"],
                )
            )
    return "\n".join(out)


def norms_table(doc) -> str:
    """Honest update norms against ‖θ_g‖ and the median (what the bounds rest on)."""
    out = [
        "\n## Honest update norms (default settings, seed %d, %d s)\n"
        % (doc["seed"], doc["seconds"]),
        "| use case | algorithm | rounds | updates | ‖Δ‖ median | ‖Δ‖ max | max ÷ median | "
        "‖Δ‖ ÷ ‖θ_g‖ median | p99 | max | largest ‖θ_g‖ ÷ its first |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        growth = r.get("theta_growth_max")
        out.append(
            "| %s | %s | %d | %d | %.4f | %.4f | %.1f | %.4f | %.4f | %.4f | %s |"
            % (
                r["use_case"],
                r["algorithm"],
                r["rounds"],
                r["updates"],
                r["norm_median"],
                r["norm_max"],
                r["max_over_median"],
                r["ratio_median"],
                r["ratio_p99"],
                r["ratio_max"],
                "%.2f" % growth if growth is not None else "–",
            )
        )
    return "\n".join(out)


def hostile_service_table(doc) -> str:
    """The service over a real mosquitto with 0, 1 and 4 hostile devices of 20."""
    out = [
        "\n## Hostile devices against the service (mosquitto, %s, %d rounds, 20 devices)\n"
        % (doc["use_case"], doc["rounds"]),
        "| hostile | rounds closed | ran to the end | wall s | updates | refused | metric "
        "before → after |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in doc["sessions"]:
        refused = ", ".join("%s %d" % kv for kv in sorted(s["rejected"].items())) or "none"
        out.append(
            "| %d of 20 | %s / %d | %s | %.1f | %s | %s | %.3f → %.3f |"
            % (
                s["hostile"],
                s["rounds_closed"],
                s["rounds_asked"],
                "yes" if s["ran_to_the_end"] else "**no**",
                s["seconds"],
                s["updates"],
                refused,
                s["metric_initial"],
                s["metric_final"],
            )
        )
    return "\n".join(out)


def _sibling(name: str):
    """Another script of benchmarks/ as a module (this one may run from anywhere)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(name + ".py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ablation_section(doc) -> str:
    """TinyMetaFed's error-feedback ablation (benchmarks/ablation_ef.py, ablation-ef.json)."""
    head = (
        "\n## Error feedback and stale residuals: TinyMetaFed (seeds %s, %s%.0f s)\n\n"
        "Equal rounds and equal device updates (same K, same rounds); test devices, online; "
        "the paired difference is over the same units (> 0: the variant is better). Rounds "
        "away: rounds a device missed before an update (first participations apart).\n"
        % (
            ", ".join(str(s) for s in doc["seeds"]),
            "quick, " if doc["quick"] else "",
            doc["seconds"],
        )
    )
    return head + "\n" + _sibling("ablation_ef").table(doc["rows"])


def rotations_line(doc) -> str:
    """The Omniglot rotation-augmentation run (omniglot-rotations.json): TinyMetaFed's figure."""
    a = doc["algorithms"]["tinymetafed"]
    return (
        "\nOmniglot with rotation augmentation (`--set rotations=true`, %d training classes; "
        "TinyMetaFed, seeds %s, test devices): accuracy online %.4f ± %.4f (seed sd %.4f), "
        "1-shot %.4f.\n"
        % (
            doc["splits"][0]["train"]["classes"],
            ", ".join(str(s) for s in doc["seeds"]),
            a["final_metric"],
            a["final_metric_ci95"],
            a["final_metric_seed_sd"],
            a["tests"]["online_1shot"]["mean"],
        )
    )


OUTER_NAMES = {
    "reptile_step": "Reptile step, plain mean (the bench's)",
    "reptile_step_wide": "Reptile step, plain mean, β₀ searched in the wide box",
    "coverage": "Reptile step, coverage-aware mean",
    "momentum": "server momentum (μ = 0.9), plain mean",
    "adam": "server Adam, plain mean",
    "yogi": "server Yogi, plain mean",
    "coverage_adam": "server Adam, coverage-aware mean",
}
"""How the ablation's configurations (benchmarks/outer.py CONFIGS) are named in the tables."""


def outer_tables(doc) -> str:
    """The ablation of the server's outer step (benchmarks/outer.py), one table a use case."""
    out = [
        "\n## The server's outer step: %s (TinyMetaFed, test devices, seeds %s, %.0f s)\n"
        % (
            ", ".join(doc["configs"]),
            ",".join(str(s) for s in doc["seeds"]),
            doc["seconds"],
        ),
        "Every row spends the same rounds and device updates, and the same fleet energy and bytes "
        "up to the compressed indices' lengths (largest spread given per use case). β₀ was "
        "searched on validation devices: %s. Δ is the paired difference to the first row over "
        "units, with its 95 %% CI.\n" % doc["search"]["design"],
    ]
    for name, part in doc["use_cases"].items():
        out.append(
            "\n**%s** (%s, %d rounds, K = %d, P = %g %%, %d fold%s; fleet energy spread %.2g %%, "
            "bytes %.2g %%)\n"
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
        out.append(
            "| server step | β₀ (per fold) | online | Δ online | seed sd | multi-pass | "
            "Δ multi-pass | rounds to target (validation curve) |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for config, c in part["configs"].items():
            vs = c.get("vs_reptile_step", {})
            delta = {
                k: "%+.4f ± %.4f" % (vs[k]["mean"], vs[k]["ci95"]) if k in vs else "–"
                for k in ("online", "multipass")
            }
            out.append(
                "| %s | %s | %.4f ± %.4f | %s | %.4f | %.4f ± %.4f | %s | %s |"
                % (
                    OUTER_NAMES.get(config, config),
                    ", ".join("%.3g" % v for v in c["outer_lr"].values()),
                    c["final_metric"],
                    c["final_metric_ci95"],
                    delta["online"],
                    c["final_metric_seed_sd"],
                    c["multipass"],
                    c["multipass_ci95"],
                    delta["multipass"],
                    c["rounds_to_target"] if c["rounds_to_target"] is not None else "not reached",
                )
            )
    return "\n".join(out)


MARKER = "<!-- generated by benchmarks/make_docs.py from benchmarks/results/*.json -->"
"""Where the generated part of docs/benchmarks.md starts; the hand-written text is above it."""

DOC = ROOT / "docs" / "benchmarks.md"


def splice(doc: str, generated: str) -> str:
    """`doc` with everything from MARKER on replaced by `generated` (which starts with it)."""
    at = doc.find(MARKER)
    if at < 0:
        raise SystemExit("%s has no line %s" % (DOC, MARKER))
    return doc[:at] + generated + "\n"


def main() -> int:
    text = generated_part()
    if "--write" in sys.argv[1:]:
        DOC.write_text(splice(DOC.read_text(), text))
        print("wrote the generated part of %s" % DOC.relative_to(ROOT))
    else:
        print(text)
    return 0


def generated_part() -> str:
    """The figures of every results JSON present, as Markdown, starting with MARKER."""
    out = [MARKER]
    benches = [b for b in (load("bench-%s.json" % u) for u in USE_CASES) if b]
    if benches:
        out.append("## The paper's claims, use case by use case\n")
        out.append(claims_table(benches))
        out.append('\n## The goals of "win honestly" (test devices, the comparison below)\n')
        out.append(
            "Goals: the least fleet energy to the target on 3 of 4 use cases; the best final "
            "metric at equal device updates on 3 of 4; omniglot's error at most 0.35 of no "
            "federation's, sine's MSE at most 0.5; upload at least 10× below TinyReptile's. "
            "Fleet energy to the target is read off the validation curve (mJ summed over the "
            "fleet's device updates until the first point at the target); error is the MSE, "
            "or 1 − accuracy.\n"
        )
        out.append(goals_table(benches))
        out.append("\n## The comparison (tuned settings, test devices)\n")
        out.append(format_markdown(benches))
        for b in benches:
            out.append("![learning curves, %s](%s)\n" % (b["use_case"], curve_figure(b)))
    tuned = [t for t in (load("tuned-%s.json" % u) for u in USE_CASES) if t]
    if tuned:
        out.append("## Settings chosen on validation devices\n")
        out.append(tuning_table(tuned))
    ablation = load("ablation-ef.json")
    if ablation:
        out.append(ablation_section(ablation))
    rotations = load("omniglot-rotations.json")
    if rotations:
        out.append(rotations_line(rotations))
    device = load("device-bench.json")
    if device:
        out.append(
            "\n## The agent under MicroPython (%s, best of %d)\n"
            % (device["runtime"], device["repeat"])
        )
        out.append(device_table(device))
    heads = load("ablation-heads.json")
    if heads:
        out.append(heads_table(heads))
    bound = load("payload-bound.json")
    if bound:
        out.append("\n## Payload size against the information-theoretic bound (P = 10 %)\n")
        out.append(bound_table(bound))
    agg = load("aggregation.json")
    if agg:
        out.append("\n## Sparse aggregation in-process (batch decode + validate + mean)\n")
        out.append(
            "Memory bandwidth measured in the same run: %.1f GB/s. Times are CPU time of the "
            "measuring thread, best of %d runs (the machine is shared).\n"
            % (agg["bandwidth_bytes_per_s"] / 1e9, agg["rows"][0].get("repeats", 1))
        )
        out.append(
            "| n | k | updates/s | median run | bandwidth lower bound, updates/s | of the bound |"
            "\n|---|---|---|---|---|---|"
        )
        for r in agg["rows"]:
            out.append(
                "| %d | %d | %.0f | %.0f | %.0f | %.1f %% |"
                % (
                    r["n"],
                    r["k"],
                    r["updates_per_second"],
                    r.get("updates_per_second_median_run", r["updates_per_second"]),
                    r["lower_bound_updates_per_second"],
                    100 * r["updates_per_second"] / r["lower_bound_updates_per_second"],
                )
            )
    load_doc = load("load.json")
    if load_doc:
        out.append("\n## Load: lightweight devices against mosquitto\n")
        out.append(
            "Every device has its own MQTT connection; the raw rate is one paho publisher to one "
            "paho subscriber through the same broker with the fleet connected, sampled before the "
            "first round and every 10 rounds; the ratio is to the samples' mean.\n"
        )
        out.append(
            "| devices | device trust | rounds | updates/s | round p50 s | round p99 s | raw QoS 1 "
            "msg/s (samples' range) | end-to-end / raw | service RSS round 2 → last MB |"
            "\n|---|---|---|---|---|---|---|---|---|"
        )
        for row in load_doc["rows"]:
            rss = row["service_rss_bytes"]
            raw = row["raw_qos1_messages_per_second_samples"]
            trust = "off" if row.get("settings", {}).get("trust_rate") == 0 else "on"
            out.append(
                "| %d | %s | %d | %.0f | %.2f | %.2f | %.0f (%.0f–%.0f) | %.0f %% | %.1f → %.1f |"
                % (
                    row["devices"],
                    trust,
                    row["rounds"],
                    row["updates_per_second"],
                    row["round_latency_p50_s"],
                    row["round_latency_p99_s"],
                    row["raw_qos1_messages_per_second"],
                    min(raw),
                    max(raw),
                    100 * row["end_to_end_vs_raw"],
                    rss[min(1, len(rss) - 1)] / 1e6,
                    rss[-1] / 1e6,
                )
            )
    for name in ("ablation-outer.json", "ablation-outer-yogi.json", "ablation-outer-both.json"):
        outer = load(name)
        if outer:
            out.append(outer_tables(outer))
    for use_case in ("sine", "omniglot", "occupancy"):
        hostile = load("hostile-%s.json" % use_case)
        if hostile:
            out.append(hostile_tables(hostile))
    goals = [d for d in (load("hostile-%s.json" % u) for u in ("sine", "omniglot")) if d]
    if goals:
        out.append(hostile_goal_table(goals))
    for use_case in ("sine", "omniglot"):
        sweep = load("hostile-clip-%s.json" % use_case)
        if sweep:
            out.append(clip_sweep_table(sweep))
    for use_case in ("sine", "omniglot"):
        trust = load("hostile-trust-%s.json" % use_case)
        if trust:
            out.append(trust_sweep_table(trust))
    agreeing = [
        d for d in (load("hostile-agreement-%s.json" % u) for u in ("sine", "omniglot")) if d
    ]
    if agreeing:
        out.append(agreement_table(agreeing))
    service = load("hostile-service.json")
    if service:
        out.append(hostile_service_table(service))
    norms = load("hostile-norms.json")
    if norms:
        out.append(norms_table(norms))
    fuzz = load("fuzz.json")
    if fuzz:
        out.append("\n## Fuzzing\n")
        out.append(
            "%s: %d inputs in %.1f s over %s; failures: %s."
            % (
                fuzz["tool"],
                fuzz["inputs"],
                fuzz["seconds"],
                ", ".join(fuzz["targets"]),
                fuzz["failure"] or "none",
            )
        )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
