"""Poisoned updates: 20 % of the fleet sends scaled, sign-flipped or random updates. The
new-device metric with plain averaging, and with norm clipping (to 2x the cohort's median update
norm) alone, plus a coordinate-wise median, or plus a trimmed mean; clean and attacked, on the
same seeds. Prints a table and writes JSON.

    .venv/bin/python benchmarks/poisoning.py [--use-case sine] [--rounds 1500]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker_service.core.aggregate import SparseUpdate  # noqa: E402
from broker_service.core.fewshot import ci95  # noqa: E402
from broker_service.core.hyperparams import settings_for  # noqa: E402
from broker_service.core.strategies import TinyMetaFed  # noqa: E402
from broker_service.sim.bench import episodes_for  # noqa: E402
from broker_service.sim.simulation import run  # noqa: E402
from broker_service.usecases.registry import load_use_case  # noqa: E402

ATTACKS = ("scaled", "sign_flip", "random")


def attacker(devices: list[str], fraction: float, seed: int):
    """A tamper function poisoning a fixed `fraction` of the devices, cycling attack types."""
    rng = np.random.default_rng([seed, 77])
    bad = sorted(rng.choice(devices, int(round(fraction * len(devices))), replace=False))
    kinds = {d: ATTACKS[i % len(ATTACKS)] for i, d in enumerate(bad)}

    def tamper(device: str, update: SparseUpdate, t: int) -> SparseUpdate:
        kind = kinds.get(device)
        if kind is None:
            return update
        v = update.values.astype(np.float32)
        if kind == "scaled":
            v = v * 50.0
        elif kind == "sign_flip":
            v = -10.0 * v
        else:
            noise = np.random.default_rng([seed, t, len(device)]).standard_normal(len(v))
            v = (noise * 10.0 * np.linalg.norm(v) / np.sqrt(len(v))).astype(np.float32)
        return SparseUpdate(update.indices, v.astype(np.float32), update.samples)

    return tamper, kinds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-case", default="sine")
    parser.add_argument("--data-dir")
    parser.add_argument("--rounds", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/poisoning.json"))
    args = parser.parse_args()
    use_case = load_use_case(args.use_case, args.data_dir, seed=args.seed)
    base = settings_for(args.use_case, rounds=args.rounds, eval_every=args.rounds)
    curve, final = episodes_for(use_case, base, args.seed)
    tamper, kinds = attacker(use_case.device_ids, 0.2, args.seed)
    rows = []
    for label, extra in (
        ("mean", {}),
        ("clip+mean", {"clip_scale": 2.0}),
        ("clip+median", {"aggregation": "median", "clip_scale": 2.0}),
        ("clip+trimmed_mean", {"aggregation": "trimmed_mean", "clip_scale": 2.0, "trim": 0.2}),
    ):
        for attacked in (False, True):
            settings = dict(base, **extra)
            result = run(
                TinyMetaFed(settings),
                use_case,
                settings,
                args.seed,
                curve,
                final,
                tamper=tamper if attacked else None,
            )
            rows.append(
                {
                    "aggregation": label,
                    "attacked": attacked,
                    "final_metric": float(result.final.mean()),
                    "ci95": ci95(result.final),
                }
            )
            print(
                "%-18s %-9s %s = %.4f ± %.4f"
                % (
                    label,
                    "attacked" if attacked else "clean",
                    use_case.metric,
                    rows[-1]["final_metric"],
                    rows[-1]["ci95"],
                )
            )
    doc = {
        "use_case": args.use_case,
        "rounds": args.rounds,
        "seed": args.seed,
        "attackers": kinds,
        "fraction": 0.2,
        "clip_scale": 2.0,
        "trim": 0.2,
        "rows": rows,
    }
    Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
