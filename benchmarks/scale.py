"""Scale: the service's memory per known device, measured directly with tracemalloc on the
structures that grow with the fleet (the FleetView entry built from each device's birth status,
and the numbers kept from each device's last telemetry), filled the way the service fills them
(`inbound.read_status` / `read_telemetry`, `presence.kept_status`, `inbound.kept_telemetry`), at
several fleet sizes; then, for the smaller sizes, the same structures over 100 rounds in which
every device sends a telemetry document and a tenth of the fleet goes offline and back; and
device trust's state after every device sent an update (core.trust remembers at most
MAX_DEVICES). Prints a table and writes JSON; docs/scale.md extrapolates it to 100k devices.

    .venv/bin/python -m benchmarks.scale [--sizes 1000 10000 100000] [--rounds 100]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np

from broker_service.core.aggregate import SparseUpdate
from broker_service.core.trust import RATE, DeviceTrust
from broker_service.observe.provenance import write_results
from broker_service.server.inbound import kept_telemetry, read_telemetry
from broker_service.server.presence import FleetView
from device_agent import reports
from device_agent.model import Plan
from device_agent.specs import sine_spec

ROOT = Path(__file__).resolve().parents[1]


def device_messages(i: int, plan: Plan, round_no: int = 12) -> tuple[str, bytes, bytes]:
    """A device id, its birth (as the agent publishes it from an ESP32) and a telemetry document
    shaped like the agent's round_done (numbers of the same types)."""
    device = "dev-%06d" % i
    birth = reports.birth(device, "esp32", "sine", plan, 12).encode()
    doc = {
        "round": round_no,
        "version": round_no,
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
    return device, birth, reports.telemetry(device, doc).encode()


def per_device_bytes(n: int) -> dict:
    """Bytes allocated by a FleetView and the kept telemetry that know `n` devices, per device."""
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
    for device, _, payload in messages:
        telemetry[device] = kept_telemetry(read_telemetry(payload))  # as the service keeps it
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


def trust_bytes_per_device(n: int) -> dict:
    """Bytes allocated by device trust (core.trust: each device's sketched history, its last
    agreement and its checkpoint encoding) after `n` devices sent one sine update each (Top-10 %
    of the model, in rounds of 100), per device; at most trust.MAX_DEVICES are remembered."""
    rng = np.random.default_rng(0)
    size = Plan(sine_spec()).n_global
    keep = max(1, size // 10)
    updates = [
        SparseUpdate(
            np.sort(rng.choice(size, keep, replace=False)).astype(np.uint32),
            rng.standard_normal(keep).astype(np.float32),
            30,
        )
        for _ in range(100)
    ]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    trust = DeviceTrust(rate=RATE)
    for start in range(0, n, 100):
        devices = ["dev-%06d" % i for i in range(start, min(n, start + 100))]
        trust.weigh(devices, updates[: len(devices)], start // 100, size)
        trust.commit()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    remembered = len(trust.histories)
    return {
        "devices": n,
        "remembered": remembered,
        "trust_bytes_per_remembered_device": used / remembered,
        "checkpoint_bytes_per_remembered_device": len(json.dumps(trust.to_dict())) / remembered,
    }


def over_rounds(n: int, rounds: int) -> dict:
    """The same structures' bytes per device after each of `rounds` rounds: every device sends a
    telemetry document of the round, and a tenth of the fleet goes offline and comes back."""
    plan = Plan(sine_spec())
    births, templates = [], []
    for i in range(n):
        device, birth, payload = device_messages(i, plan, 0)
        births.append((device, birth))
        prefix = b'{"round": 0, "version": 0, '
        assert payload.startswith(prefix)
        templates.append(payload[len(prefix) :])  # the document after its round and version
    offline = json.dumps({"state": "offline"}).encode()
    view = FleetView()
    telemetry: dict[str, dict] = {}
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for device, birth in births:
        view.update(device, birth)
    per_round = []
    for r in range(rounds):
        for i in range(r % 10, n, 10):
            view.update(births[i][0], offline)
            view.update(births[i][0], births[i][1])
        head = b'{"round": %d, "version": %d, ' % (r, r)
        for (device, _), rest in zip(births, templates, strict=True):
            telemetry[device] = kept_telemetry(read_telemetry(head + rest))
        gc.collect()
        per_round.append((tracemalloc.get_traced_memory()[0] - base) / n)
    tracemalloc.stop()
    return {
        "devices": n,
        "rounds": rounds,
        "bytes_per_device_after_each_round": per_round,
        "growth_bytes_per_device_round_2_to_last": per_round[-1] - per_round[1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--rounds", type=int, default=100)
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
    flat = [over_rounds(n, args.rounds) for n in args.sizes if n <= 10_000]
    for f in flat:
        per = f["bytes_per_device_after_each_round"]
        print(
            "%7d devices, %d rounds: %.0f B/device after round 1, %.0f after the last (max %.0f)"
            % (f["devices"], f["rounds"], per[0], per[-1], max(per))
        )
    trusted = [trust_bytes_per_device(n) for n in args.sizes]
    for t in trusted:
        print(
            "%7d devices: trust remembers %d, %.0f B each in memory, %.0f B in the checkpoint"
            % (
                t["devices"],
                t["remembered"],
                t["trust_bytes_per_remembered_device"],
                t["checkpoint_bytes_per_remembered_device"],
            )
        )
    doc = {"memory_per_known_device": rows, "memory_over_rounds": flat, "trust": trusted}
    write_results(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
