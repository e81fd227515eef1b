"""Hostile devices (issue 12): 1 of 20 and 4 of 20 of the fleet attack; what happens to the
new-device metric, and to the service.

`learning`: the simulation (`simulation.run` with the service's influence bounds) on one use
case: every attack of `broker_service.sim.attacks` with 5 % and 20 % of the training devices
hostile (1 and 4 of 20), against the clean run on the same seeds, with the default aggregation
(`trusted`: the clipped mean weighed by device trust) and the clipped mean without trust
(`clipped_mean`) on every seed, and plain mean and no bounds at all on the first seed (the
archived results also hold a trimmed mean and a cohort-median clip, options since removed).
The coverage-aware mean (`coverage`: the clipped updates averaged per coordinate over the
devices that sent it) is attacked on every seed too. `--only clipped_mean,trusted,no_federation`
and `--attacks none,sign_flip,...` run a part of that (`none`: the clean run). Rows hold the
metric on the test devices (`final_metric`) and on the validation devices (`validation_metric`).
Writes benchmarks/results/hostile-<use case>.json.

`trust-sweep`: the clipped mean weighed by device trust at several settings (trust_rate,
trust_full, trust_probation, trust_clip) and the clipped mean without trust, clean and under 4
of 20 reversed updates (×10, just under the refusal bound, and ×10 under a fresh id every
round): how the trust settings were chosen, on the validation devices. Writes
benchmarks/results/hostile-trust-<use case>.json.

`agreement`: one session of the clipped mean without trust, 4 of 20 devices reversing their
updates, recording every update's agreement with the consensus of device histories (what trust
is built from), for honest and hostile devices. Writes
benchmarks/results/hostile-agreement-<use case>.json.

`sweep`: the clipped mean with clip_recent at 1, 2, 3 and 5 times the recent median norm, clean
and under the attacks clipping is for, on every seed (how the default was chosen). Writes
benchmarks/results/hostile-clip-<use case>.json.

`step-sweep`: the clipped mean at outer steps (outer_lr) 0.5, 1 and 1.5, clean and under the
attacks of `sweep`, on every seed: how far a longer step helps the clean metric and what it
costs under attack. Writes benchmarks/results/hostile-step-<use case>.json.

`norms`: honest sessions of every use case and federated algorithm, recording each update's
norm against ‖θ_g‖ and against the median (what the refusal bound before any history rests on).
Writes benchmarks/results/hostile-norms.json.

`service`: a real mosquitto, the service and 20 simulated agents for a session, clean, then with
1 and 4 of them re-flashed (`HostileRunner`: 3e38 values, inflated sample counts, NaN, reversed,
stale, scaled and every-coordinate updates) while they also publish malformed status, telemetry
and update messages (`BOMBS`, retained too). Records whether the service ran to the end, the
rounds closed, what was refused and the metric. Writes benchmarks/results/hostile-service.json.

    .venv/bin/python -m benchmarks.hostile learning --use-case sine [--seeds 0,1,2] [--workers 1]
    .venv/bin/python -m benchmarks.hostile sweep --use-case sine
    .venv/bin/python -m benchmarks.hostile step-sweep --use-case sine
    .venv/bin/python -m benchmarks.hostile trust-sweep --use-case sine
    .venv/bin/python -m benchmarks.hostile agreement --use-case sine
    .venv/bin/python -m benchmarks.hostile norms [--workers 1]
    .venv/bin/python -m benchmarks.hostile service [--rounds 100]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from broker_service.core.aggregate import update_norm
from broker_service.core.bounds import InfluenceBounds
from broker_service.core.hyperparams import settings_for
from broker_service.core.strategies import ALGORITHMS
from broker_service.core.trust import RATE, DeviceTrust
from broker_service.observe.provenance import write_results
from broker_service.sim.attacks import (
    BOMBS,
    LEARNING_ATTACKS,
    Attacker,
    HostileRunner,
    WatchedBounds,
    forged_delta,
    hostile_devices,
)
from broker_service.sim.bench import _one_blas_thread, episodes_for
from broker_service.sim.simulation import run
from broker_service.usecases.registry import load_use_case

ROOT = Path(__file__).resolve().parents[1]

FRACTIONS = {0.05: "1 of 20", 0.2: "4 of 20"}
OFF = {"trust_rate": 0.0}
AGGREGATIONS = {
    # name: (training settings over the use case's, bounds on)
    "trusted": ({}, True),  # the default: the clipped mean, weighed by device trust
    "clipped_mean": (OFF, True),  # bounds.CLIP_RECENT × the recent median norm, no trust
    # the clipped updates averaged per coordinate over their senders (core/aggregate.py)
    "coverage": ({"coverage_mean": True, **OFF}, True),
    "mean": ({"clip_recent": 0.0, **OFF}, True),
    "undefended": ({"clip_recent": 0.0, **OFF}, False),  # before issue 12: no bound, no clamp
}
DEFAULT = "trusted"
TRUSTED = "trusted"
CLIPPED = "clipped_mean"
"""The clipped mean without trust: the default before trust, and what `sweep` and `step-sweep`
tune."""
EVERY_SEED = (TRUSTED, CLIPPED, "coverage")
"""Aggregations attacked on every seed (the others on the first only)."""
BOUND_SEEKING = ("max_norm", "drift")
SWEEP_CLIP = (1.0, 2.0, 3.0, 5.0)
"""The clip_recent multiples `sweep` compares (the default is bounds.CLIP_RECENT)."""
SWEEP_ATTACKS = ("sign_flip", "max_norm", "drift")
SWEEP_STEP = (0.5, 1.0, 1.5)
"""The outer step sizes (outer_lr, β_0) `step-sweep` compares under the clipped mean."""
SWEEP_TRUST = tuple(
    {"trust_rate": rate, "trust_full": full, "trust_probation": probation, "trust_clip": clip}
    for rate, full, probation, clip in (
        (0.1, 0.2, 1, False),
        (0.02, 0.2, 1, False),
        (0.1, 0.1, 1, False),
        (0.02, 0.2, 3, False),
        (0.02, 0.2, 1, True),
        (0.02, 0.2, 3, True),
        (0.02, 0.2, 5, True),
        (0.02, 0.2, 10, True),
    )
)
"""The trust settings `trust-sweep` compares (rate and full first, then probation and the trust
clip at the chosen rate and full), chosen by the metric on the validation devices (the default
is trust.RATE, trust.FULL, trust.PROBATION with the trust clip on)."""
TRUST_ATTACKS = ((None, 0.0), ("sign_flip", 0.2), ("max_norm", 0.2), ("reenroll", 0.2))
"""Clean, and the attacks the clipped mean did not hold (and trust did not at first), that
`trust-sweep` runs."""
RESULTS = ROOT / "benchmarks" / "results"

_USE_CASES: dict = {}


def ci95(values: np.ndarray) -> float:
    """Half-width of the normal 95 % interval of the mean over the new devices."""
    return 1.96 * float(np.std(values, ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def jobs(seeds: list[int]) -> list[tuple]:
    """(algorithm, aggregation, attack, fraction, seed): the default everywhere, the others
    clean on every seed and attacked on the first; no federation for reference."""
    out = []
    for seed in seeds:
        out.append(("no_federation", DEFAULT, None, 0.0, seed))
        for name in AGGREGATIONS:
            if name != "undefended":  # clean, it is the plain mean exactly
                out.append(("tinymetafed", name, None, 0.0, seed))
        for name in AGGREGATIONS:
            if name in EVERY_SEED or seed == seeds[0]:
                for attack in LEARNING_ATTACKS:
                    if name == "undefended" and attack in BOUND_SEEKING:
                        continue  # without a bound there is nothing to aim under
                    if name != TRUSTED and attack == "reenroll":
                        continue  # sign_flip under other ids: without trust ids do not count
                    for fraction in FRACTIONS:
                        out.append(("tinymetafed", name, attack, fraction, seed))
    return out


def run_job(use_case_name: str, data_dir: str | None, rounds: int | None, job: tuple) -> dict:
    """One simulated session (in a worker process); a job is (algorithm, aggregation, attack,
    fraction, seed) and optionally settings to use over the aggregation's (a clip_recent, or a
    dict). The row has the metric on the test devices (`final_metric`) and on the validation
    devices (`validation_metric`, what settings are chosen by)."""
    algorithm, aggregation, attack, fraction, seed = job[:5]
    key = (use_case_name, seed)
    if key not in _USE_CASES:
        _USE_CASES[key] = load_use_case(use_case_name, data_dir, seed=seed)
    use_case = _USE_CASES[key]
    extra, enabled = AGGREGATIONS[aggregation]
    if len(job) > 5:
        over = job[5] if isinstance(job[5], dict) else {"clip_recent": job[5]}
        extra = dict(extra, **over)
    settings = settings_for(use_case_name, rounds=rounds, **extra)
    settings["eval_every"] = settings["rounds"]  # the final metric only
    curve, final = episodes_for(use_case, settings, seed)
    bounds = WatchedBounds.from_settings(settings)
    bounds.enabled = enabled
    hostile = hostile_devices(use_case.device_ids, fraction, seed) if attack else []
    tamper = Attacker(attack, hostile, seed, bounds, settings["rounds"]) if attack else None
    row = {
        "algorithm": algorithm,
        "aggregation": aggregation,
        "attack": attack,
        "fraction": fraction,
        "hostile": len(hostile),
        "devices": len(use_case.device_ids),
        "seed": seed,
        "clip_recent": settings["clip_recent"],
        "outer_lr": settings["outer_lr"],
        "max_model_growth": settings["max_model_growth"],
        "trust_rate": bounds.trust.rate,
        "trust_full": bounds.trust.full,
        "trust_probation": bounds.trust.probation,
        "trust_clip": bounds.trust_clip,
    }
    started = time.perf_counter()
    with np.errstate(all="ignore"):
        try:
            result = run(
                ALGORITHMS[algorithm](settings),
                use_case,
                settings,
                seed,
                curve,
                final,
                tamper=tamper,
                bounds=bounds,
            )
        except Exception as exc:  # an undefended model diverges until nothing decodes
            row.update(diverged=True, error="%s: %s" % (type(exc).__name__, str(exc)[:80]))
            row.update(final_metric=None, ci95=None, seconds=time.perf_counter() - started)
            return row
    finite = bool(np.all(np.isfinite(result.final))) and bool(np.all(np.isfinite(result.theta)))
    validation = result.curve[-1][1] if result.curve else float("nan")
    row.update(
        diverged=not finite,
        final_metric=float(result.final.mean()) if finite else None,
        ci95=ci95(result.final) if finite else None,
        validation_metric=float(validation) if finite and math.isfinite(validation) else None,
        refused_updates=result.refused_updates,
        refused_rounds=result.refused_rounds,
        downweighted=result.downweighted,
        capped_rounds=result.capped_rounds,
        theta_growth_max=bounds.peak / bounds.start if bounds.start else None,
        seconds=round(time.perf_counter() - started, 2),
    )
    return row


def sweep_cases(part: str) -> list[tuple]:
    """What a sweep runs on each seed, in order: (aggregation, attack, fraction, settings over
    the aggregation's or None). `sweep` and `step-sweep`: the clipped mean at each SWEEP_CLIP
    multiple or SWEEP_STEP outer step (a longer step learns faster, and lets a hostile push
    further each round), clean and under SWEEP_ATTACKS. `trust-sweep`: each of TRUST_ATTACKS
    with trust at each SWEEP_TRUST setting, after the clipped mean without trust."""
    if part == "trust-sweep":
        out = []
        for attack, fraction in TRUST_ATTACKS:
            if attack != "reenroll":  # without trust, ids do not count: it is sign_flip
                out.append((CLIPPED, attack, fraction, None))
            out += [(TRUSTED, attack, fraction, over) for over in SWEEP_TRUST]
        return out
    overs = SWEEP_CLIP if part == "sweep" else [{"outer_lr": step} for step in SWEEP_STEP]
    attacked = [(None, 0.0)] + [(a, f) for a in SWEEP_ATTACKS for f in FRACTIONS]
    return [(CLIPPED, attack, fraction, over) for over in overs for attack, fraction in attacked]


def sweep_jobs(part: str, seeds: list[int]) -> list[tuple]:
    """The jobs of a sweep (`sweep_cases`) on every seed, as `run_job` takes them."""
    return [
        ("tinymetafed", aggregation, attack, fraction, seed, *(() if over is None else (over,)))
        for seed in seeds
        for aggregation, attack, fraction, over in sweep_cases(part)
    ]


NAMES = {
    "sweep": "hostile-clip-%s.json",
    "trust-sweep": "hostile-trust-%s.json",
    "step-sweep": "hostile-step-%s.json",
}


def learning(args) -> int:
    seeds = [int(s) for s in args.seeds.split(",")]
    todo = sweep_jobs(args.part, seeds) if args.part in NAMES else jobs(seeds)
    only = set(args.only.split(",")) if args.only else None

    def selected(algorithm: str, aggregation: str) -> bool:
        if only is None:
            return True
        return algorithm in only if algorithm != "tinymetafed" else aggregation in only

    todo = [job for job in todo if selected(job[0], job[1])]
    if args.attacks:
        wanted = set(args.attacks.split(","))
        todo = [job for job in todo if (job[2] or "none") in wanted]
    path = Path(args.json or RESULTS / (NAMES.get(args.part, "hostile-%s.json") % args.use_case))
    doc = {
        "use_case": args.use_case,
        "metric": load_use_case(args.use_case, args.data_dir, seed=seeds[0]).metric,
        "seeds": seeds,
        "rounds": settings_for(args.use_case, rounds=args.rounds)["rounds"],
        "fractions": {str(f): label for f, label in FRACTIONS.items()},
        "aggregations": {k: v[0] for k, v in AGGREGATIONS.items()},
        "default": DEFAULT,
        "attacks": LEARNING_ATTACKS,
        "rows": [],
    }
    before = 0
    if args.append and path.exists():  # more seeds of the same code and settings
        old = json.loads(path.read_text())
        doc["rows"] = old["rows"]
        doc["seeds"] = sorted(set(old["seeds"]) | set(seeds))
        before = old.get("seconds", 0)
    started = time.time() - before
    with ProcessPoolExecutor(args.workers, initializer=_one_blas_thread) as pool:
        futures = [
            pool.submit(run_job, args.use_case, args.data_dir, args.rounds, job) for job in todo
        ]
        for i, future in enumerate(futures):
            row = future.result()
            doc["rows"].append(row)
            doc["seconds"] = round(time.time() - started)
            path.write_text(json.dumps(doc, indent=1) + "\n")  # partial results survive
            print(
                "[%d/%d] %s %s %s %s seed %d: %s"
                % (
                    i + 1,
                    len(todo),
                    row["algorithm"],
                    row["aggregation"],
                    row["attack"] or "clean",
                    row["hostile"],
                    row["seed"],
                    "diverged"
                    if row["diverged"]
                    else "%.4f ± %.4f" % (row["final_metric"], row["ci95"]),
                ),
                flush=True,
            )
    return 0


# -- agreement with the consensus of device histories --


class AgreementLog(WatchedBounds):
    """The service's bounds with trust off, recording the agreement each update's device would
    have (core.trust at the rate `trusted` uses, computed and not applied), by device."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.observer = DeviceTrust(rate=RATE)
        self.agreements: dict[str, list[float]] = {}

    def weigh(self, devices, updates, t, n):
        if devices is None:
            return list(updates)
        self.observer.weigh(devices, updates, t, n)
        for device, (_, found, *_) in self.observer.pending.items():
            if found is not None:
                self.agreements.setdefault(device, []).append(found)
        self.observer.commit()
        return list(updates)


def _spread(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {
        "count": int(len(values)),
        "mean": float(values.mean()),
        "sd": float(values.std()),
        "p5": float(np.percentile(values, 5)),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "below_zero": float((values < 0).mean()),
    }


def agreement_job(use_case_name, data_dir, rounds, attack, fraction, seed) -> dict:
    """One session with the clipped mean (trust off) under `attack`: the agreements of honest
    and hostile updates, per update and per device (the mean of its updates)."""
    use_case = load_use_case(use_case_name, data_dir, seed=seed)
    settings = settings_for(use_case_name, rounds=rounds, trust_rate=0.0)
    settings["eval_every"] = settings["rounds"]
    curve, final = episodes_for(use_case, settings, seed)
    log = AgreementLog.from_settings(settings)
    hostile = hostile_devices(use_case.device_ids, fraction, seed)
    tamper = Attacker(attack, hostile, seed, log)
    run(
        ALGORITHMS["tinymetafed"](settings),
        use_case,
        settings,
        seed,
        curve,
        final,
        tamper=tamper,
        bounds=log,
    )
    row = {"use_case": use_case_name, "attack": attack, "fraction": fraction, "seed": seed}
    for name, members in (("honest", False), ("hostile", True)):
        per = [v for d, v in log.agreements.items() if (d in hostile) == members]
        row[name + "_updates"] = _spread([a for v in per for a in v])
        row[name + "_devices"] = _spread([np.mean(v) for v in per])
    return row


def agreements(args) -> int:
    row = agreement_job(args.use_case, args.data_dir, args.rounds, "sign_flip", 0.2, 0)
    print(json.dumps(row), flush=True)
    doc = {
        "trust_rate": RATE,
        "rounds": settings_for(args.use_case, rounds=args.rounds)["rounds"],
        **row,
    }
    path = RESULTS / ("hostile-agreement-%s.json" % args.use_case)
    write_results(Path(args.json) if args.json else path, doc)
    return 0


# -- honest update norms --

NORM_ALGORITHMS = ("tinymetafed", "tinyreptile", "reptile", "fedavg")


class NormLog(InfluenceBounds):
    """The service's bounds, recording every honest update's norm and ‖θ_g‖ as it is screened."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pairs: list[tuple[float, float]] = []

    def screen(self, update, theta, budget, entries=0):
        self.pairs.append((update_norm(update.values), update_norm(theta)))
        return super().screen(update, theta, budget, entries)


def norms_job(use_case_name: str, data_dir: str | None, algorithm: str) -> dict:
    """One honest session with the default settings (θ_g's growth not bounded, to see it); the
    norms' summary, and how far ‖θ_g‖ grew over its starting length."""
    use_case = load_use_case(use_case_name, data_dir, seed=0)
    settings = settings_for(use_case_name, max_model_growth=0.0)
    settings["eval_every"] = settings["rounds"]
    curve, final = episodes_for(use_case, settings, 0)
    log = NormLog.from_settings(settings)
    run(ALGORITHMS[algorithm](settings), use_case, settings, 0, curve, final, bounds=log)
    norms = np.array([n for n, _ in log.pairs])
    ratios = np.array([n / t for n, t in log.pairs])
    return {
        "use_case": use_case_name,
        "algorithm": algorithm,
        "rounds": settings["rounds"],
        "updates": len(norms),
        "norm_median": float(np.median(norms)),
        "norm_max": float(norms.max()),
        "max_over_median": float(norms.max() / np.median(norms)),
        "ratio_median": float(np.median(ratios)),
        "ratio_p99": float(np.percentile(ratios, 99)),
        "ratio_max": float(ratios.max()),
        "theta_growth_max": max(t for _, t in log.pairs) / log.pairs[0][1],
    }


def norms(args) -> int:
    todo = [(u, a) for u in ("sine", "omniglot", "kws", "occupancy") for a in NORM_ALGORITHMS]
    started = time.time()
    with ProcessPoolExecutor(args.workers, initializer=_one_blas_thread) as pool:
        futures = [pool.submit(norms_job, u, args.data_dir, a) for u, a in todo]
        rows = []
        for future in futures:
            rows.append(future.result())
            print(json.dumps(rows[-1]), flush=True)
    doc = {"seed": 0, "seconds": round(time.time() - started), "rows": rows}
    write_results(Path(args.json) if args.json else RESULTS / "hostile-norms.json", doc)
    return 0


# -- the service over a real broker --


def service_session(port: int, state: Path, hostile: int, rounds: int, seed: int) -> dict:
    """One session of the service with 20 simulated agents, `hostile` of them re-flashed and
    spamming malformed messages; returns what happened."""
    from broker_service.testing.session import Session
    from broker_service.usecases.sine import SineUseCase
    from device_agent.topics import Topics

    use_case = SineUseCase()
    with Session(state, port) as session:
        fleet = session.fleet(use_case, 20, seed=seed, start=False)
        bad = [agent.device_id for agent in fleet.agents[:hostile]]
        for agent in fleet.agents[:hostile]:
            agent.round_runner = HostileRunner(use_case, agent.round_runner.net, seed)
        cfg = session.config(
            use_case="sine",
            rounds=rounds,
            cohort=5,
            seed=seed,
            state_dir=str(state),
            round_timeout=10.0,
            wait_for_devices=30.0,
            eval_every=rounds,
            eval_devices=20,
        )
        service = session.service(cfg, log=state / "service.log")
        spammer = Spammer(port, Topics(), bad, service.n) if hostile else None
        if spammer:
            session.on_close(spammer.close)
        fleet.start()
        started = time.monotonic()
        thread, summary = session.background(service)
        while thread.is_alive():
            if spammer:
                spammer.round()
            thread.join(0.1)
        seconds = time.monotonic() - started
    return {
        "hostile": hostile,
        "devices": 20,
        "hostile_devices": bad,
        "rounds_asked": rounds,
        "rounds_closed": summary.get("rounds"),
        "ran_to_the_end": summary.get("rounds") == rounds,
        "seconds": round(seconds, 1),
        "updates": summary.get("updates"),
        "rejected": summary.get("rejected"),
        "metric_initial": summary.get("metric_initial"),
        "metric_final": summary.get("metric_final"),
        "messages_sent_by_spammer": spammer.sent if spammer else 0,
    }


class Spammer:
    """Publishes every bomb on the hostile devices' own topics, and retained ones once."""

    def __init__(self, port: int, topics, devices: list[str], n: int):
        import paho.mqtt.client as mqtt

        self.topics = topics
        self.devices = devices
        self.sent = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spammer")
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()
        huge = forged_delta({"round": 0, "version": 0}, n, range(n), [3e38] * n, 30)
        for i, device in enumerate(devices):
            self._send(self.topics.devices + "evil-%d/status" % i, BOMBS["status_deep"][1], True)
            self._send(self.topics.telemetry(device), BOMBS["telemetry_deep"][1], True)
            self._send(self.topics.update(device), huge, True)

    def _send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
        self.sent += 1

    def round(self) -> None:
        """One volley: every bomb from every hostile device (status bombs under other ids, so
        the hostile devices stay online and keep being invited)."""
        for i, device in enumerate(self.devices):
            for name, (leaf, payload) in BOMBS.items():
                if leaf == "status":
                    self._send(self.topics.devices + "evil-%d-%s/status" % (i, name), payload)
                else:
                    self._send(self.topics.devices + "%s/%s" % (device, leaf), payload)

    def close(self) -> None:
        for i, device in enumerate(self.devices):  # clear the retained bombs
            for leaf in ("telemetry", "update"):
                self._send(self.topics.devices + "%s/%s" % (device, leaf), b"", True)
            self._send(self.topics.devices + "evil-%d/status" % i, b"", True)
        self.client.loop_stop()
        self.client.disconnect()


def service(args) -> int:
    from broker_service.testing.session import Session

    sessions = []
    with tempfile.TemporaryDirectory() as tmp, Session.with_mosquitto(Path(tmp)) as broker:
        for hostile in (0, 1, 4):
            state = Path(tmp) / ("state-%d" % hostile)
            state.mkdir()
            row = service_session(broker.port, state, hostile, args.rounds, args.seed)
            sessions.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "hostile_devices"}))
    doc = {"use_case": "sine", "rounds": args.rounds, "seed": args.seed, "sessions": sessions}
    write_results(Path(args.json) if args.json else RESULTS / "hostile-service.json", doc)
    return 0 if all(s["ran_to_the_end"] for s in sessions) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="part", required=True)
    for part in ("learning", "sweep", "trust-sweep", "step-sweep"):
        one = sub.add_parser(part)
        one.add_argument("--only", help="only these aggregations (comma-separated)")
        one.add_argument("--attacks", help="run only these attacks (comma-separated; clean: none)")
        one.add_argument("--append", action="store_true", help="add the rows to the file's")
        one.add_argument("--use-case", default="sine")
        one.add_argument("--data-dir", default=os.environ.get("TINYMETAFED_DATA"))
        one.add_argument("--rounds", type=int)
        one.add_argument("--seeds", default="0,1,2")
        one.add_argument("--workers", type=int, default=1)
        one.add_argument("--json")
    agree = sub.add_parser("agreement")
    agree.add_argument("--use-case", default="sine")
    agree.add_argument("--data-dir", default=os.environ.get("TINYMETAFED_DATA"))
    agree.add_argument("--rounds", type=int)
    agree.add_argument("--json")
    three = sub.add_parser("norms")
    three.add_argument("--data-dir", default=os.environ.get("TINYMETAFED_DATA"))
    three.add_argument("--workers", type=int, default=1)
    three.add_argument("--json")
    two = sub.add_parser("service")
    two.add_argument("--rounds", type=int, default=100)
    two.add_argument("--seed", type=int, default=0)
    two.add_argument("--json")
    args = parser.parse_args()
    if args.part == "norms":
        return norms(args)
    if args.part == "agreement":
        return agreements(args)
    return service(args) if args.part == "service" else learning(args)


if __name__ == "__main__":
    sys.exit(main())
