"""The bench over several seeds on every use case: the headline figures and the claims per seed.

Runs `tinymetafed bench` for every use case on every seed in one pool of workers, writes each
use case's multi-seed document (benchmarks/results/bench-<use case>.json: units pooled over
seeds, the spread over seeds, the claims with their comparisons) and a compact summary
(seed-sweep.json: per use case and seed, each entry's test metric and each claim's verdict), the
figures of docs/results.md and docs/appendix.md.

    .venv/bin/python -m benchmarks.seed_sweep [--use-cases sine,omniglot,kws,occupancy]
        [--seeds 0,1,2] [--data-dir D] [--workers 2] [--out-dir benchmarks/results]
"""

from __future__ import annotations

import sys
from pathlib import Path

from broker_service.observe.provenance import load_average, write_results
from broker_service.sim.bench import run_benches, sweep_parser
from broker_service.sim.learning import failures

ROOT = Path(__file__).resolve().parents[1]


def sweep_rows(doc: dict) -> list[dict]:
    """One row per seed of a multi-seed bench document: each entry's test metric (online) and
    each claim's verdict on that seed alone."""
    verdicts = doc.get("per_seed_verdicts", {})
    return [
        {
            "use_case": doc["use_case"],
            "seed": seed,
            "metric": doc["metric"],
            "final_metric": {
                name: a["per_seed"][str(seed)]["final_metric"]
                for name, a in doc["algorithms"].items()
            },
            "verdicts": verdicts.get(str(seed), {}),
        }
        for seed in doc["seeds"]
    ]


def main() -> int:
    parser = sweep_parser(__doc__)
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks/results"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    started = load_average()
    docs = run_benches(
        args.use_cases.split(","), args.data_dir, seeds, workers=args.workers, verbose=True
    )
    out = Path(args.out_dir)
    for doc in docs:
        write_results(out / ("bench-%s.json" % doc["use_case"]), doc, started)
    summary = {
        "seeds": seeds,
        "use_cases": [d["use_case"] for d in docs],
        "seconds": docs[0]["seconds"],
        "rows": [row for d in docs for row in sweep_rows(d)],
        "verdicts": {
            d["use_case"]: {k: c["verdict"] for k, c in d["criteria"].items()} for d in docs
        },
    }
    write_results(out / "seed-sweep.json", summary, started)
    for row in summary["rows"]:
        print(
            "%-9s seed %d  %s"
            % (
                row["use_case"],
                row["seed"],
                "  ".join("%s %.4f" % (k, v) for k, v in row["final_metric"].items()),
            )
        )
    problems = [line for doc in docs for line in failures(doc)]
    for line in problems:
        print("does not learn or refused honest updates: %s" % line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
