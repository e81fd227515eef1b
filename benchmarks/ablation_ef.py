"""TinyMetaFed's error feedback, on and off: every use case.

Runs TinyMetaFed and its ablation (broker_service.sim.bench.ABLATIONS: error feedback off; the
archived results also hold the residual aged by the rounds away, options since removed) with
the bench's protocol (tuned rates, rounds, cohort, test devices) on every use case and seed, in
one pool of workers. Every run has the same rounds and cohort, so equal rounds are equal device
updates. Also reports how stale the residuals are: rounds a device was away before an update,
and the norm of the residual it adds back against the norm of its update.

Writes benchmarks/results/ablation-ef.json (the rows, and each use case's bench document
without its per-unit detail) and prints the table.

    .venv/bin/python -m benchmarks.ablation_ef [--use-cases sine,omniglot,kws,occupancy]
        [--seeds 0,1,2] [--data-dir D] [--workers 2] [--quick] [--out F]
"""

from __future__ import annotations

import time
from pathlib import Path

from broker_service.observe.provenance import write_results
from broker_service.observe.tables import markdown_table
from broker_service.sim.bench import ABLATIONS, run_benches, sweep_parser

ROOT = Path(__file__).resolve().parents[1]

NAMES = {
    "tinymetafed": "error feedback on (default)",
    "tinymetafed_no_ef": "error feedback off",
}


def ablation_rows(doc: dict) -> list[dict]:
    """One row per TinyMetaFed variant of a bench document run with ablations: test metric
    (online) with its CI over units and spread over seeds, the paired difference to TinyMetaFed
    (> 0: the variant is better), device updates, upload per update, and staleness."""
    rows = []
    for name in ["tinymetafed"] + [e.name for e in ABLATIONS]:
        a = doc["algorithms"].get(name)
        if a is None:
            continue
        ablation = doc.get("ablations", {}).get(name, {})
        rows.append(
            {
                "use_case": doc["use_case"],
                "entry": name,
                "variant": NAMES.get(name, name),
                "overrides": ablation.get("overrides", {}),
                "metric": doc["metric"],
                "final_metric": a["final_metric"],
                "ci95": a["final_metric_ci95"],
                "seed_sd": a["final_metric_seed_sd"],
                "multipass": a["tests"]["multipass"]["mean"],
                "paired_vs_tinymetafed": ablation.get("paired_vs_tinymetafed"),
                "rounds": a["rounds"],
                "updates": a["updates"],
                "bytes_up_per_update": a["bytes_up_per_update"],
                "to_target_updates": a["to_target"]["updates"] if a["to_target"] else None,
                "staleness": a.get("staleness"),
            }
        )
    return rows


def _stale(row: dict, key: str, stat: str) -> str:
    s = row["staleness"]
    value = s[key][stat] if s else None
    return "–" if value is None else "%.2f" % value


def table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
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
    body = []
    for r in rows:
        paired = r["paired_vs_tinymetafed"]
        body.append(
            [
                r["use_case"],
                r["variant"],
                "%.4f ± %.4f" % (r["final_metric"], r["ci95"]),
                "%.4f" % r["seed_sd"],
                "%+.4f ± %.4f" % (paired["difference"], paired["ci95"]) if paired else "–",
                "%d" % r["updates"],
                "–" if r["to_target_updates"] is None else "%d" % r["to_target_updates"],
                "%s / %s" % (_stale(r, "rounds_away", "mean"), _stale(r, "rounds_away", "median")),
                "%s / %s"
                % (
                    _stale(r, "residual_to_delta", "mean"),
                    _stale(r, "residual_to_delta", "median"),
                ),
            ]
        )
    return markdown_table(header, body)


def main() -> int:
    parser = sweep_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="the bench's --quick settings")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/ablation-ef.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    docs = run_benches(
        args.use_cases.split(","),
        args.data_dir,
        seeds,
        quick=args.quick,
        algorithms=["tinymetafed"],
        workers=args.workers,
        verbose=True,
        ablations=True,
    )
    rows = [row for doc in docs for row in ablation_rows(doc)]
    seconds = round(time.perf_counter() - start, 1)
    out = {
        "seeds": seeds,
        "quick": args.quick,
        "seconds": seconds,
        "workers": args.workers,
        "rows": rows,
        "settings": {doc["use_case"]: doc["settings"] for doc in docs},
        "tuned": {doc["use_case"]: doc["tuned"] for doc in docs},
    }
    write_results(args.out, out)
    print(table(rows))
    print("took %.1f s; wrote %s" % (seconds, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
