"""Regenerate the figures of docs/benchmarks.md from the JSON in benchmarks/results/.

.venv/bin/python benchmarks/make_docs.py > docs/benchmarks-figures.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker_service.sim.bench import format_markdown  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def load(name: str):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def device_table(doc) -> str:
    lines = [
        "| use case | params | MACs/sample | step ms (native) | step ms (plain) | native "
        "speed-up | step ms (CPython) | peak heap B | payload B |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        lines.append(
            "| %s | %d | %d | %.2f | %.2f | %.2fx | %.2f | %d | %d |"
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
            )
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


def sweep_table(doc) -> str:
    """One row per use case and seed: the metrics, and both criteria for each θ_l setting."""
    lines = [
        "| use case | seed | TinyMetaFed frozen | TinyMetaFed joint | TinyReptile | no "
        "federation | vs TinyReptile (frozen → joint) | error ÷ no-fed (frozen → joint) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        m = r["final_metric"]
        fmt = "%+.3f" if r["metric"] == "accuracy" else "%.2f×"

        def mark(part, key, fmt=fmt):
            return (fmt if key == "vs_tinyreptile" else "%.2f") % part[key] + (
                "" if part[key + "_ok"] else " ✗"
            )

        lines.append(
            "| %s | %d | %.4f | %.4f | %.4f | %.4f | %s → %s | %s → %s |"
            % (
                r["use_case"],
                r["seed"],
                m["tinymetafed_frozen"],
                m["tinymetafed_joint"],
                m["tinyreptile"],
                m["no_federation"],
                mark(r["frozen"], "vs_tinyreptile"),
                mark(r["joint"], "vs_tinyreptile"),
                mark(r["frozen"], "error_vs_no_federation"),
                mark(r["joint"], "error_vs_no_federation"),
            )
        )
    lines.append(
        "\n✗: outside the learning-core issue's bound (2 accuracy points or 1.15× MSE "
        "against TinyReptile; half the no-federation error). %d s in all." % doc["seconds"]
    )
    return "\n".join(lines)


AGGREGATION_NAMES = {
    "clipped_mean": "clipped mean (default)",
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


def hostile_tables(doc) -> str:
    """The hostile-device benchmark of one use case: clean runs, the default under every attack
    on every seed against its clean run, and every aggregation under attack on the first seed."""
    rows = doc["rows"]
    seeds = doc["seeds"]

    def find(algorithm, aggregation, attack, fraction, seed):
        for r in rows:
            if (r["algorithm"], r["aggregation"], r["attack"], r["fraction"], r["seed"]) == (
                algorithm,
                aggregation,
                attack,
                fraction,
                seed,
            ):
                return r
        return None

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
    out.append(
        "| no federation | "
        + " | ".join(_metric(find("no_federation", doc["default"], None, 0.0, s)) for s in seeds)
        + " |"
    )
    for name, label in AGGREGATION_NAMES.items():
        if name != "undefended":
            cells = [_metric(find("tinymetafed", name, None, 0.0, s)) for s in seeds]
            out.append("| %s | %s |" % (label, " | ".join(cells)))
    out.append(
        "\nThe default under attack, against its clean run on the same seed (%d training "
        "devices; ✓: not worse than the clean run by more than its CI95 for 1 of 20, by more "
        "than twice it for 4 of 20):\n" % first["devices"]
    )
    out.append("| attack | hostile | " + " | ".join("seed %d" % s for s in seeds) + " |")
    out.append("|---|---|" + "---|" * len(seeds))
    for attack in doc["attacks"]:
        for fraction, label in doc["fractions"].items():
            cells = []
            hostile = None
            for seed in seeds:
                clean = find("tinymetafed", doc["default"], None, 0.0, seed)
                row = find("tinymetafed", doc["default"], attack, float(fraction), seed)
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
            out.append("| %s | %s (%s) | %s |" % (attack, label, hostile, " | ".join(cells)))
    seed = seeds[0]
    out.append("\nEvery aggregation under attack, seed %d:\n" % seed)
    out.append("| attack | hostile | " + " | ".join(AGGREGATION_NAMES.values()) + " |")
    out.append("|---|---|" + "---|" * len(AGGREGATION_NAMES))
    out.append(
        "| none | – | %s |"
        % " | ".join(
            _metric(find("tinymetafed", "mean" if n == "undefended" else n, None, 0.0, seed))
            for n in AGGREGATION_NAMES
        )
    )
    for attack in doc["attacks"]:
        for fraction, label in doc["fractions"].items():
            cells = [
                _metric(find("tinymetafed", n, attack, float(fraction), seed))
                for n in AGGREGATION_NAMES
            ]
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
        "\n## Choosing the clip multiple: %s (%s, mean over seeds %s)\n"
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


def norms_table(doc) -> str:
    """Honest update norms against ‖θ_g‖ and the median (what the bounds rest on)."""
    out = [
        "\n## Honest update norms (default settings, seed %d, %d s)\n"
        % (doc["seed"], doc["seconds"]),
        "| use case | algorithm | rounds | updates | ‖Δ‖ median | ‖Δ‖ max | max ÷ median | "
        "‖Δ‖ ÷ ‖θ_g‖ median | p99 | max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        out.append(
            "| %s | %s | %d | %d | %.4f | %.4f | %.1f | %.4f | %.4f | %.4f |"
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


def main() -> int:
    out = ["<!-- generated by benchmarks/make_docs.py from benchmarks/results/*.json -->"]
    benches = [load("bench-%s.json" % u) for u in ("sine", "omniglot", "kws", "occupancy")]
    out.append("## The paper's comparison (default bench settings)\n")
    out.append(format_markdown([b for b in benches if b]))
    device = load("device-bench.json")
    if device:
        out.append(
            "## The agent under MicroPython (%s, best of %d)\n"
            % (device["runtime"], device["repeat"])
        )
        out.append(device_table(device))
    bound = load("payload-bound.json")
    if bound:
        out.append("\n## Payload size against the information-theoretic bound (P = 10 %)\n")
        out.append(bound_table(bound))
    agg = load("aggregation.json")
    if agg:
        out.append("\n## Sparse aggregation in-process (decode + validate + mean)\n")
        out.append(
            "Memory bandwidth measured in the same run: %.1f GB/s.\n"
            % (agg["bandwidth_bytes_per_s"] / 1e9)
        )
        out.append("| n | k | updates/s | bandwidth lower bound, updates/s |\n|---|---|---|---|")
        for r in agg["rows"]:
            out.append(
                "| %d | %d | %.0f | %.0f |"
                % (r["n"], r["k"], r["updates_per_second"], r["lower_bound_updates_per_second"])
            )
    load_doc = load("load.json")
    if load_doc:
        out.append(
            "\n## Load: %d devices against mosquitto, %d rounds\n"
            % (load_doc["devices"], load_doc["rounds"])
        )
        out.append(
            "| updates/s | round p50 s | round p99 s | raw QoS 1 msg/s (368 B) | "
            "end-to-end / raw | service RSS first → last MB |\n|---|---|---|---|---|---|"
        )
        rss = load_doc["service_rss_bytes"]
        out.append(
            "| %.0f | %.2f | %.2f | %.0f | %.0f %% | %.1f → %.1f |"
            % (
                load_doc["updates_per_second"],
                load_doc["round_latency_p50_s"],
                load_doc["round_latency_p99_s"],
                load_doc["raw_qos1_messages_per_second_368B"],
                100 * load_doc["end_to_end_vs_raw"],
                rss[0] / 1e6,
                rss[-1] / 1e6,
            )
        )
    for use_case in ("sine", "omniglot", "occupancy"):
        hostile = load("hostile-%s.json" % use_case)
        if hostile:
            out.append(hostile_tables(hostile))
    for use_case in ("sine", "omniglot"):
        sweep = load("hostile-clip-%s.json" % use_case)
        if sweep:
            out.append(clip_sweep_table(sweep))
    service = load("hostile-service.json")
    if service:
        out.append(hostile_service_table(service))
    norms = load("hostile-norms.json")
    if norms:
        out.append(norms_table(norms))
    sweep = load("seed-sweep.json")
    if sweep:
        out.append("\n## The few-shot criteria over seeds, θ_l frozen or joint during adaptation\n")
        out.append(sweep_table(sweep))
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
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
