"""Encoded update size against the information-theoretic bound, for each default model at
P = 10 %: log2 C(n, k) bits for which entries were kept, plus the value bits (16 for float16,
8 for int8 plus the 32-bit scale). Prints a table and writes JSON.

    .venv/bin/python -m benchmarks.payload_bound [--json benchmarks/results/payload-bound.json]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from broker_service.core.device_round import top_k_indices
from broker_service.observe.provenance import write_results
from device_agent import codec
from device_agent.model import Plan
from device_agent.specs import SPECS, spec_for
from device_agent.topk import top_k_count

ROOT = Path(__file__).resolve().parents[1]


def log2_binomial(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/payload-bound.json"))
    args = parser.parse_args()
    rows = []
    rng = np.random.default_rng(0)
    for use_case in SPECS:
        n = Plan(spec_for(use_case)).n_global
        k = top_k_count(n, 10.0)
        delta = rng.standard_normal(n).astype(np.float32)
        idx = top_k_indices(delta, k)
        for name, enc, value_bits, extra in (
            ("f16", codec.VALUE_F16, 16, 0),
            ("int8", codec.VALUE_INT8, 8, 32),
        ):
            payload = codec.encode(
                codec.KIND_DELTA, n, idx.tolist(), delta[idx].tolist(), 1, 1, 30, enc
            )
            bound_bits = log2_binomial(n, k) + k * value_bits + extra
            body_bits = 8 * (len(payload) - codec.HEADER_SIZE)
            rows.append(
                {
                    "use_case": use_case,
                    "n": n,
                    "k": k,
                    "values": name,
                    "payload_bytes": len(payload),
                    "bound_bytes": bound_bits / 8,
                    "ratio_with_header": 8 * len(payload) / bound_bits,
                    "ratio_body": body_bits / bound_bits,
                }
            )
            print(
                "%-10s n=%5d k=%4d %-4s payload %5d B  bound %7.1f B  ratio %.2f "
                "(body only %.2f)"
                % (
                    use_case,
                    n,
                    k,
                    name,
                    len(payload),
                    bound_bits / 8,
                    rows[-1]["ratio_with_header"],
                    rows[-1]["ratio_body"],
                )
            )
    write_results(args.json, {"top_p": 10.0, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
