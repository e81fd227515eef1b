"""Devices that sleep, over mosquitto with the real service, against invited rounds at equal
device updates.

For each use case and seed, on a fresh mosquitto at a free 127.0.0.1 port:
- *rounds*: the service in invited-rounds mode (`mode = "rounds"`, in this process) with the
  always-on simulated fleet (broker_service.sim.fleet: real agents, one thread each) for R
  rounds of the use case's cohort C;
- *async*: the service in asynchronous mode (`mode = "async"`) with the sleepy fleet
  (broker_service.sim.sleepy_fleet: a real WakeAgent a training wake, its flash state and sensor
  ring in files, wakes spread over the fleet, every device's period `--period` simulated seconds
  and the simulated clock `--compression` times the wall clock) for R · C / B steps of B
  updates, B and the staleness power as benchmarks/async_fleet.py chose them on validation
  devices (benchmarks/results/async-fleet.json; without it B = C and power 0.5).
Both have the same training devices (every training device of the use case), the bench's
tuned settings (benchmarks/results/tuned-*.json, fold 0) and R rounds' worth of device updates.

Measured per run: the final θ_g (the service's checkpoint) on the test devices as the bench
measures it (broker_service.sim.bench_run.evaluate_on_test_devices; online protocol), pooled
over seeds as the bench pools (mean and 95 % CI over units, and the paired difference over
units, async − rounds, > 0 better); wall time; the service's bytes up and down and what the
devices sent and received; device updates accepted; the staleness of the accepted updates; the
receipts; updates lost (sent, then neither accepted, refused nor still held unacknowledged by
the device at the end) and accepted twice (both must be 0).

Writes benchmarks/results/sleepy-fleet.json and prints the table.

    .venv/bin/python -m benchmarks.sleepy_fleet [--use-cases sine,kws] [--seeds 0,1,2]
        [--data-dir D] [--rounds sine=1000,kws=60] [--period 3600]
        [--compression sine=720,kws=3600] [--workers 8] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.async_fleet import MAX_STALENESS
from benchmarks.docgen.sleepy import sleepy_table
from broker_service.core.hyperparams import settings_for
from broker_service.core.strategies import ALGORITHMS
from broker_service.observe.logs import EventLog
from broker_service.observe.provenance import write_results
from broker_service.server import checkpoint
from broker_service.server.buffered import AsyncService
from broker_service.server.service import AggregationService
from broker_service.sim import tuning
from broker_service.sim.bench_pool import _combine_test
from broker_service.sim.bench_run import evaluate_on_test_devices
from broker_service.sim.claims import paired_difference
from broker_service.sim.sleepy_fleet import SleepyFleet
from broker_service.sim.usecase_cache import cached_use_case
from broker_service.testing.session import Session
from device_agent import state as flash
from device_agent.model import Plan

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = {"sine": 1000, "kws": 60}
"""R: each use case's full rounds, the bench's budget (sine 1,000 rounds, 5,000 device updates;
kws 60, 180). Over the broker a sine round takes about 0.3 s and the sleepy fleet makes about
10 updates a second, so sine takes about 13 minutes a seed, and the whole run about 45 minutes
on two cores (`--rounds sine=200` for a shorter look)."""
COMPRESSION = {"sine": 360.0, "kws": 3600.0}
"""Simulated seconds a wall second: a 1 h period is 10 s of wall time for sine's 100 devices
(10 wakes a second) and 1 s for kws's 3 (3 wakes a second)."""
PROTOCOL = "online"
"""The test protocol the table reports (the bench's headline)."""


class Tally(EventLog):
    """The service's event log, kept in a file and counted: accepted (device, version) pairs
    with their staleness, repeats, refusals by reason."""

    def __init__(self, path: Path):
        super().__init__(path=path)
        self.accepted: list[tuple[str, int, int]] = []
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()

    def __call__(self, event: str, **fields) -> None:
        super().__call__(event, **fields)
        if event == "accepted":
            version = int(fields.get("version", fields["round"]))
            self.accepted.append((fields["device"], version, int(fields.get("staleness", 0))))
        elif event == "duplicate":
            self.duplicates += 1
        elif event == "rejected":
            self.rejected[str(fields.get("reason"))] += 1


class Sent:
    """Counts the updates the always-on agents make: (device, round) pairs and payload bytes;
    `wrap(runner)` is an agent's own round runner, counted."""

    def __init__(self):
        self.pairs: list[tuple[str, int]] = []
        self.bytes = 0
        self.lock = threading.Lock()

    def wrap(self, runner):
        def counted(agent, command):
            result = runner(agent, command)
            with self.lock:
                self.pairs.append((agent.device_id, int(command["round"])))
                self.bytes += len(result.payload)
            return result

        return counted


def chosen_async(use_case: str, cohort: int) -> dict:
    """B and the staleness power chosen on validation devices by benchmarks/async_fleet.py,
    or B = the cohort and power 0.5 (FedBuff's) without its results."""
    path = ROOT / "benchmarks/results/async-fleet.json"
    if path.exists():
        chosen = json.loads(path.read_text()).get("chosen", {}).get(use_case)
        if chosen:
            return {
                "buffer": int(chosen["buffer"]),
                "staleness_power": float(chosen["staleness_power"]),
                "from": "async-fleet.json",
            }
    return {"buffer": cohort, "staleness_power": 0.5, "from": "default (no async-fleet.json)"}


def run_settings(use_case: str, rounds: int) -> dict:
    """The use case's settings with the bench's tuned TinyMetaFed values (fold 0) and R."""
    tuned = tuning.load_tuned(use_case, str(ROOT / "benchmarks/results"))
    return {**tuning.tuned_overrides(tuned, "tinymetafed", 0), "rounds": rounds}


def accounting(tally: Tally, sent: list[tuple[str, int]], held: set[tuple[str, int]]) -> dict:
    """Updates sent against those the service accepted: accepted twice, refused, held
    unacknowledged by their device at the end, and lost (none of those)."""
    accepted = Counter((d, v) for d, v, _ in tally.accepted)
    refused = sum(tally.rejected.values())
    unaccounted = set(sent) - set(accepted) - held
    return {
        "updates_sent": len(sent),
        "distinct_updates_sent": len(set(sent)),
        "accepted": sum(accepted.values()),
        "accepted_twice": sum(c - 1 for c in accepted.values()),
        "accepted_not_sent": len(set(accepted) - set(sent)),
        "repeats_counted_once": tally.duplicates,
        "refused": dict(tally.rejected),
        "held_unacknowledged_at_end": len(held - set(accepted)),
        "lost": max(0, len(unaccounted) - refused),
    }


def staleness_figures(tally: Tally) -> dict:
    """The staleness of the accepted updates."""
    stale = np.array([s for _, _, s in tally.accepted] or [0])
    return {
        "mean": float(stale.mean()),
        "p90": float(np.percentile(stale, 90)),
        "max": int(stale.max()),
    }


def final_tests(use_case, summary: dict, settings: dict, seed: int) -> dict:
    """The service's final θ_g (its checkpoint) on the test devices, as the bench measures."""
    ckpt = checkpoint.load(Path(summary["checkpoint"]))
    strategy = ALGORITHMS["tinymetafed"](settings)
    return evaluate_on_test_devices(use_case, ckpt.theta, strategy, settings, seed)


def progress_printer(label: str, total: int, every: int):
    """A progress callback: one line every `every` rounds or steps, and at the end."""
    start = time.perf_counter()

    def show(report) -> None:
        done = report.round + 1
        if done % every == 0 or done == total:
            print(
                "  %s %d/%d, %d updates, %.0f s"
                % (label, done, total, report.totals.updates, time.perf_counter() - start),
                flush=True,
            )

    return show


def rounds_run(name: str, data_dir: str | None, seed: int, rounds: int, folder: Path) -> dict:
    """The service in invited rounds with the always-on fleet of every training device."""
    use_case = cached_use_case(name, data_dir, seed, 0)
    settings = {**settings_for(name), **run_settings(name, rounds)}
    cohort = int(settings["cohort"])
    tally = Tally(folder / "service.log")
    with Session.with_mosquitto(folder) as session:
        fleet = session.fleet(use_case, len(use_case.device_ids), seed=seed, start=False)
        sent = Sent()
        for agent in fleet.agents:  # each keeps its own runner (its error-feedback memory)
            agent.round_runner = sent.wrap(agent.round_runner)
        fleet.start()
        cfg = session.config(
            use_case=name,
            data_dir=data_dir,
            seed=seed,
            rounds=rounds,
            quorum=1.0,
            min_updates=cohort,
            eval_every=rounds,
            eval_devices=2,
            settings=run_settings(name, rounds),
        )
        label = "%s seed %d rounds" % (name, seed)
        progress = progress_printer(label, rounds, max(1, rounds // 5))
        service = AggregationService(cfg, tally, progress=progress)
        start = time.perf_counter()
        summary = service.run()
        wall = time.perf_counter() - start
        received = sum(agent.bytes_in for agent in fleet.agents)
    return {
        "mode": "rounds",
        "seed": seed,
        "devices": len(use_case.device_ids),
        "rounds": summary["rounds"],
        "cohort": cohort,
        "wall_s": wall,
        "service": service_figures(summary),
        "devices_sent_bytes": sent.bytes,
        "devices_received_bytes": received,
        "updates": accounting(tally, sent.pairs, set()),
        "staleness": staleness_figures(tally),
        "tests": final_tests(use_case, summary, settings, seed),
    }


def async_run(
    name: str, data_dir: str | None, seed: int, rounds: int, folder: Path, options: dict
) -> dict:
    """The service in async mode with the sleepy fleet of every training device."""
    use_case = cached_use_case(name, data_dir, seed, 0)
    settings = {**settings_for(name), **run_settings(name, rounds)}
    cohort, buffer = int(settings["cohort"]), int(options["buffer"])
    steps = max(1, round(rounds * cohort / buffer))
    tally = Tally(folder / "service.log")
    with Session.with_mosquitto(folder) as session:
        cfg = session.config(
            mode="async",
            use_case=name,
            data_dir=data_dir,
            seed=seed,
            rounds=steps,
            buffer=buffer,
            staleness_power=options["staleness_power"],
            max_staleness=MAX_STALENESS,
            step_timeout=3600.0,  # a step is taken when its buffer is full, as in simulation
            eval_every=steps,
            eval_devices=2,
            settings=run_settings(name, steps),
        )
        label = "%s seed %d async" % (name, seed)
        progress = progress_printer(label, steps, max(1, steps // 5))
        service = AsyncService(cfg, tally, progress=progress)
        fleet = SleepyFleet(
            "127.0.0.1",
            session.port,
            use_case,
            len(use_case.device_ids),
            folder / "devices",
            period_s=options["period_s"],
            compression=options["compression"],
            seed=seed,
            workers=options["workers"],
            settings=settings,
        )
        session.on_close(fleet.stop)
        start = time.perf_counter()
        fleet.start()
        summary = service.run()
        wall = time.perf_counter() - start
        simulated = fleet.simulated_s()
        fleet.stop()
    wakes = fleet.stats.summary()
    held = unacknowledged(fleet)
    return {
        "mode": "async",
        "seed": seed,
        "devices": len(use_case.device_ids),
        "steps": summary["rounds"],
        "buffer": buffer,
        "staleness_power": options["staleness_power"],
        "wall_s": wall,
        "simulated_hours": simulated / 3600.0,
        "service": service_figures(summary),
        "devices_sent_bytes": wakes["bytes_sent"],
        "devices_received_bytes": wakes["bytes_received"],
        "wakes": wakes,
        "receipts": wakes["outcomes"].get("receipt", 0),
        "updates": accounting(tally, fleet.stats.published, held),
        "staleness": staleness_figures(tally),
        "tests": final_tests(use_case, summary, settings, seed),
    }


def unacknowledged(fleet: SleepyFleet) -> set[tuple[str, int]]:
    """The (device, version) of each update a device still holds unacknowledged in flash."""
    held = set()
    for device, cfg in fleet.configs.items():
        plan = Plan(cfg["spec"])
        st, _ = flash.load(cfg["sleep"]["state"], plan, cfg["max_model_bytes"])
        if st.update is not None:
            held.add((device, st.update_version))
    return held


def service_figures(summary: dict) -> dict:
    """The service's totals."""
    keys = ("rounds", "updates", "bytes_up", "bytes_down", "rejected")
    return {k: summary[k] for k in keys}


def pooled(name: str, data_dir: str | None, runs: list[dict]) -> dict:
    """The test metric over seeds as the bench pools it, per mode, and the paired difference."""
    use_case = cached_use_case(name, data_dir, runs[0]["seed"], 0)
    algorithms = {}
    for mode in ("rounds", "async"):
        by_seed = {r["seed"]: [r] for r in runs if r["mode"] == mode}
        algorithms[mode] = {"tests": {PROTOCOL: _combine_test(use_case, by_seed, PROTOCOL)}}
    doc = {"metric": use_case.metric, "algorithms": algorithms}
    out = {mode: algorithms[mode]["tests"][PROTOCOL] for mode in algorithms}
    out["paired_async_vs_rounds"] = paired_difference(doc, "async", "rounds", PROTOCOL)
    return out


def row(name: str, mode: str, runs: list[dict], pool: dict) -> dict:
    """One table row: a use case's mode over its seeds."""
    mine = [r for r in runs if r["mode"] == mode]
    updates = sum(r["service"]["updates"] for r in mine)
    stale = [r["staleness"] for r in mine]
    return {
        "use_case": name,
        "mode": mode,
        "metric": pool[mode]["metric"],
        "mean": pool[mode]["mean"],
        "ci95": pool[mode]["ci95"],
        "units": pool[mode]["units"],
        "paired": pool["paired_async_vs_rounds"] if mode == "async" else None,
        "updates_per_run": updates / len(mine),
        "steps_per_run": float(np.mean([r["service"]["rounds"] for r in mine])),
        "wall_s_per_run": float(np.mean([r["wall_s"] for r in mine])),
        "service_bytes_up_per_update": sum(r["service"]["bytes_up"] for r in mine) / updates,
        "service_bytes_down_per_update": sum(r["service"]["bytes_down"] for r in mine) / updates,
        "device_bytes_sent_per_update": sum(r["devices_sent_bytes"] for r in mine) / updates,
        "device_bytes_received_per_update": sum(r["devices_received_bytes"] for r in mine)
        / updates,
        "staleness_mean": float(np.mean([s["mean"] for s in stale])),
        "staleness_max": max(s["max"] for s in stale),
        "simulated_hours_per_run": (
            float(np.mean([r["simulated_hours"] for r in mine])) if mode == "async" else None
        ),
        "lost": sum(r["updates"]["lost"] for r in mine),
        "accepted_twice": sum(r["updates"]["accepted_twice"] for r in mine),
    }


def per_use_case(text: str, defaults: dict, kind=float) -> dict:
    """`sine=200,kws=60` over the defaults."""
    out = dict(defaults)
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        out[key] = kind(value)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--use-cases", default="sine,kws")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data-dir", default=os.environ.get("TINYMETAFED_DATA"))
    parser.add_argument("--rounds", default="", help="R per use case, e.g. sine=200,kws=60")
    parser.add_argument("--period", type=float, default=3600.0, help="simulated s between wakes")
    parser.add_argument("--compression", default="", help="per use case, e.g. sine=720")
    parser.add_argument("--workers", type=int, default=8, help="threads running wakes at once")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/sleepy-fleet.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    rounds = per_use_case(args.rounds, ROUNDS, int)
    compression = per_use_case(args.compression, COMPRESSION)
    runs, rows, pools, choices = [], [], {}, {}
    for name in args.use_cases.split(","):
        cohort = int(settings_for(name)["cohort"])
        choices[name] = {
            **chosen_async(name, cohort),
            "period_s": args.period,
            "compression": compression[name],
            "workers": args.workers,
        }
        mine = []
        for seed in seeds:
            for mode in ("rounds", "async"):
                folder = Path(tempfile.mkdtemp(prefix="tmf-sleepy-"))
                print(
                    "%s seed %d: %s (%.0f s so far)"
                    % (name, seed, mode, time.perf_counter() - start),
                    flush=True,
                )
                try:
                    if mode == "rounds":
                        run = rounds_run(name, args.data_dir, seed, rounds[name], folder)
                    else:
                        run = async_run(
                            name, args.data_dir, seed, rounds[name], folder, choices[name]
                        )
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
                print(
                    "  %s: %d updates, %.0f s, lost %d, accepted twice %d"
                    % (
                        mode,
                        run["service"]["updates"],
                        run["wall_s"],
                        run["updates"]["lost"],
                        run["updates"]["accepted_twice"],
                    ),
                    flush=True,
                )
                mine.append(run)
        pools[name] = pooled(name, args.data_dir, mine)
        rows += [row(name, mode, mine, pools[name]) for mode in ("rounds", "async")]
        runs += mine
    seconds = round(time.perf_counter() - start, 1)
    doc = {
        "seeds": seeds,
        "protocol": PROTOCOL,
        "rounds": {n: rounds[n] for n in choices},
        "budget": {n: rounds[n] * int(settings_for(n)["cohort"]) for n in choices},
        "max_staleness": MAX_STALENESS,
        "async": choices,
        "seconds": seconds,
        "rows": rows,
        "pooled": pools,
        "runs": [{k: v for k, v in r.items() if k != "tests"} for r in runs],
    }
    write_results(args.out, doc)
    print(sleepy_table(rows))
    print("took %.1f s; wrote %s" % (seconds, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
