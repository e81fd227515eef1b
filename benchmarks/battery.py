"""Battery life of a device that sleeps between training wakes, against one that stays
connected: days on a battery for every board profile, default use case and kernel, at 1, 24 and
96 training wakes a day, by device_agent/energy.py. Prints a table and writes JSON.

    .venv/bin/python -m benchmarks.battery [--json benchmarks/results/battery.json]

Each use case's round is the agent's own (device_agent.bench.run under CPython: 10
reconstruction and 20 adaptation samples, Top-P 10 % with float16 values, as
benchmarks/device_bench.py runs it): its MACs, the update's payload bytes, the model's (dense
float32) and the work order's bytes. Per training wake the device writes its state to flash once
(the held model, the residual, the unacknowledged update and STATE_EXTRA_BYTES), and between
training wakes it takes one sensor wake per sample a round trains on (30 per training wake),
each sample the model's input as float32 plus a label; the ring of a round's samples stays in
memory kept through sleep when it fits, in flash otherwise. Every training wake fetches the
model (fetch share 1: an upper bound, as when the fleet's model moves between any two wakes of a
device). TLS on, as the board configurations ship (deploy/board/config.*.example.json), and off.
The always-connected baselines: energy.listen_energy_mj for a day (idle current, keepalive
pings), with and without the radio's power save, plus the same rounds. The battery: 2,000 mAh at
3.7 V, 80 % usable (energy.BATTERY_*), and the same with a self-discharge of
SELF_DISCHARGE of its capacity a month. Flash wear: writes and erases a day and the years until
the free blocks reach the flash's endurance.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from broker_service.observe.provenance import write_results
from device_agent import battery, bench, energy
from device_agent.model import Plan
from device_agent.specs import spec_for

ROOT = Path(__file__).resolve().parents[1]
USE_CASES = ("sine", "omniglot", "kws", "occupancy")
BOARDS = ("nrf52840", "esp32", "rp2040")
WAKES = (1, 24, 96)
"""Training wakes a day."""
RECON, ADAPT = 10, 20
"""A round's samples, as the device bench runs it."""
STATE_EXTRA_BYTES = 64
"""The state file's versions, rollback floor and framing, assumption."""
SELF_DISCHARGE = 0.02
"""A lithium cell's self-discharge, share of its capacity a month at room temperature,
assumption (a typical figure; more when warm)."""
FETCH = 1.0
GOAL = {"board": "esp32", "use_case": "sine", "kernel": "micropython", "wakes": 1, "days": 365}
"""The goal: an ESP32 on the default battery, one sine round a day with the pure-Python kernels,
lasts at least a year."""


def work_of(use_case: str) -> dict:
    """The figures energy.py prices for one training wake of `use_case`, from the agent's
    round."""
    r = bench.run(use_case, RECON, ADAPT)
    plan = Plan(spec_for(use_case))
    n = r["global_params"]
    state = r["model_bytes"] + 4 * n + r["payload_bytes"] + STATE_EXTRA_BYTES
    sample = 4 * (math.prod(plan.input_shape) + 1)
    return battery.round_work(
        r["round_macs"],
        r["payload_bytes"],
        r["model_bytes"],
        r["command_bytes"],
        state_bytes=state,
        sample_bytes=sample,
        samples=r["samples"],
    )


def _parts(parts: dict) -> dict:
    return {k: {"mj": v[0], "s": v[1]} for k, v in parts.items()}


def rows_for(use_case: str, work: dict) -> list[dict]:
    """Every board, kernel, TLS setting and wake rate of one use case."""
    rows = []
    for name in BOARDS:
        board = energy.PROFILES[name]
        in_flash = battery.ring_in_flash(board, work)
        for kernel in energy.KERNELS:
            for tls in (True, False):
                wake = battery.training_wake_parts(board, work, FETCH, kernel, tls)
                for n in WAKES:
                    sensors = work["samples"] * n
                    parts = battery.day_parts(board, work, n, sensors, FETCH, kernel, tls)
                    day = sum(v[0] for v in parts.values())
                    baselines = {
                        key: battery.day_connected_mj(board, work, n, kernel, tls, ps, FETCH)
                        for key, ps in (("connected", False), ("power_save", True))
                    }
                    erases = battery.flash_erases_per_day(board, work, n, sensors)
                    rows.append(
                        {
                            "board": name,
                            "use_case": use_case,
                            "kernel": kernel,
                            "tls": tls,
                            "wakes_per_day": n,
                            "sensor_wakes_per_day": sensors,
                            "training_wake_mj": sum(v[0] for v in wake.values()),
                            "training_wake_s": sum(v[1] for v in wake.values()),
                            "training_wake": _parts(wake),
                            "day_mj": day,
                            "day": _parts(parts),
                            "days": battery.battery_days(day),
                            "days_self_discharge": battery.battery_days(
                                day, self_discharge=SELF_DISCHARGE
                            ),
                            "connected_day_mj": baselines["connected"],
                            "connected_days": battery.battery_days(baselines["connected"]),
                            "power_save_day_mj": baselines["power_save"],
                            "power_save_days": battery.battery_days(baselines["power_save"]),
                            "ring_in_flash": in_flash,
                            "flash_writes_per_day": battery.flash_writes_per_day(
                                n, sensors, in_flash
                            ),
                            "flash_erases_per_day": erases,
                            "flash_wear_years": battery.flash_wear_years(
                                erases, board["fs_free_blocks"], board["flash_endurance"]
                            ),
                        }
                    )
    return rows


def goal(rows: list[dict]) -> dict:
    """The ESP32 goal, with TLS on and off, and what dominates its day."""
    out = dict(GOAL)
    for tls in (True, False):
        r = next(
            r
            for r in rows
            if r["board"] == GOAL["board"]
            and r["use_case"] == GOAL["use_case"]
            and r["kernel"] == GOAL["kernel"]
            and r["wakes_per_day"] == GOAL["wakes"]
            and r["tls"] is tls
        )
        key = "tls" if tls else "plain"
        out[key] = {
            "days": r["days"],
            "days_self_discharge": r["days_self_discharge"],
            "met": r["days"] >= GOAL["days"],
            "shares": {k: v["mj"] / r["day_mj"] for k, v in r["day"].items()},
        }
    return out


def profiles() -> dict:
    """The sleep figures of every board profile, as energy.py holds them now."""
    keys = (
        "supply_v",
        "sleep_ua",
        "sleep_keeps_ram",
        "boot_s",
        "import_s",
        "radio_up_s",
        "assoc_s",
        "assoc_ma",
        "wait_ma",
        "tls_cycles",
        "idle_ma",
        "ps_idle_ma",
        "retained_bytes",
        "flash_endurance",
        "fs_free_blocks",
    )
    return {name: {k: energy.PROFILES[name][k] for k in keys} for name in BOARDS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/battery.json"))
    args = parser.parse_args()
    works = {}
    rows = []
    for use_case in USE_CASES:
        works[use_case] = work_of(use_case)
        rows += rows_for(use_case, works[use_case])
    print(
        "%-9s %-9s %-11s %9s %9s %9s %11s %11s"
        % ("board", "use case", "kernel", "1/day", "24/day", "96/day", "connected", "power save")
    )
    for r in rows:
        if r["wakes_per_day"] != 1 or not r["tls"]:
            continue
        cells = [
            x["days"]
            for x in rows
            if x["tls"]
            and (x["board"], x["use_case"], x["kernel"]) == (r["board"], r["use_case"], r["kernel"])
        ]
        print(
            "%-9s %-9s %-11s %9.0f %9.0f %9.0f %11.1f %11.1f"
            % (
                r["board"],
                r["use_case"],
                r["kernel"],
                *cells,
                r["connected_days"],
                r["power_save_days"],
            )
        )
    g = goal(rows)
    print(
        "goal: %s %s %s, %d wake a day, >= %d days: %.0f days with TLS (%s), %.0f without"
        % (
            g["board"],
            g["use_case"],
            g["kernel"],
            g["wakes"],
            g["days"],
            g["tls"]["days"],
            "met" if g["tls"]["met"] else "not met",
            g["plain"]["days"],
        )
    )
    doc = {
        "battery": {
            "capacity_mah": battery.BATTERY_MAH,
            "volts": battery.BATTERY_V,
            "usable": battery.BATTERY_USABLE,
            "self_discharge_per_month": SELF_DISCHARGE,
        },
        "round": {"recon_samples": RECON, "adapt_samples": ADAPT},
        "fetch": FETCH,
        "constants": {
            "rtt_s": battery.RTT_S,
            "receipt_wait_s": battery.RECEIPT_WAIT_S,
            "sensor_read_s": battery.SENSOR_READ_S,
            "state_extra_bytes": STATE_EXTRA_BYTES,
        },
        "profiles": profiles(),
        "work": works,
        "rows": rows,
        "goal": g,
    }
    write_results(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
