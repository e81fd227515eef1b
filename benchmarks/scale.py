"""Scale: the service's memory per known device, measured directly with tracemalloc on the
structures that grow with the fleet (the FleetView of retained statuses, holding each device's
birth document, and the last telemetry document kept per device), at several fleet sizes.
Prints a table and writes JSON; docs/scale.md extrapolates it to 100k devices.

    .venv/bin/python benchmarks/scale.py [--sizes 1000 10000 100000]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broker_service.server.presence import FleetView  # noqa: E402
from device_agent import reports  # noqa: E402
from device_agent.model import Plan  # noqa: E402
from device_agent.specs import sine_spec  # noqa: E402


def device_messages(i: int, plan: Plan) -> tuple[str, bytes, dict]:
    """A device id, its birth (as the agent publishes it from an ESP32) and a telemetry document
    shaped like the agent's round_done (numbers of the same types)."""
    device = "dev-%06d" % i
    birth = reports.birth(device, "esp32", "sine", plan, 12).encode()
    doc = {
        "round": 12,
        "version": 12,
        "compute_ms": 412 + i % 97,
        "samples": 20,
        "macs": 81920,
        "nnz": 92,
        "loss_before": 0.8123 + i * 1e-6,
        "loss_after": 0.2311 + i * 1e-6,
        "adapt_loss": [0.8123, 0.5012, 0.3342, 0.2311],
        "heap_free": 151232,
        "heap_peak": 48211,
        "bytes_sent": 368,
        "bytes_received": 4876,
        "energy_mj": 3.21 + i * 1e-6,
        "rejected": {},
    }
    telemetry = json.loads(reports.telemetry(device, doc))
    return device, birth, telemetry


def per_device_bytes(n: int) -> dict:
    """Bytes allocated by a FleetView and a telemetry dict that know `n` devices, per device."""
    plan = Plan(sine_spec())
    messages = [device_messages(i, plan) for i in range(n)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    view = FleetView()
    for device, birth, _ in messages:
        view.update(device, birth)
    presence = tracemalloc.get_traced_memory()[0] - base
    telemetry: dict[str, dict] = {}
    for device, _, doc in messages:
        telemetry[device] = json.loads(json.dumps(doc))  # a fresh copy, as the service parses it
    both = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(view.online()) == n
    return {
        "devices": n,
        "presence_bytes_per_device": presence / n,
        "telemetry_bytes_per_device": (both - presence) / n,
        "total_bytes_per_device": both / n,
        "birth_payload_bytes": len(messages[0][1]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/scale.json"))
    args = parser.parse_args()
    rows = [per_device_bytes(n) for n in args.sizes]
    print("devices  presence B/dev  telemetry B/dev  total B/dev  (birth payload %d B)"
          % rows[0]["birth_payload_bytes"])  # fmt: skip
    for r in rows:
        print(
            "%7d  %14.0f  %15.0f  %11.0f"
            % (
                r["devices"],
                r["presence_bytes_per_device"],
                r["telemetry_bytes_per_device"],
                r["total_bytes_per_device"],
            )
        )
    Path(args.json).write_text(json.dumps({"memory_per_known_device": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
