"""Devices that sleep, learning asynchronously, against invited rounds at equal device updates.

TinyMetaFed in invited rounds (the bench's run) and asynchronously (broker_service.sim.buffered:
every training device wakes every `--period` seconds from its own phase, its update reaching
the service as long after it woke as the energy model's training wake takes up to its uplink on
`--board` with `--kernel` (waking, associating, connecting, fetching, training, writing flash,
publishing; `--round-s` overrides it); the service steps every B updates, each weighed by
(1 + staleness)^-power, or with what it holds once a step has been open as long as a device can
take to answer a new version, a wake period, its jitter and the wake's arrival time (its
step_timeout, as the service's). Both runs make the same device updates: the asynchronous one
takes rounds · cohort / B steps.

1. Choice on validation devices (seed 0): B in {cohort/2, cohort, 2 · cohort} and the power in
   {0, 0.5, 1}; the pair whose learning curve ends best on the validation devices is kept. A B
   larger than the use case's training devices is not tried (`untried` in the file): one
   update per device per version cannot fill it, its steps would all close at the timeout with
   fewer updates, and the run would not make the rounds' device updates.
2. Comparison on test devices (seeds 0-2): the invited rounds against the chosen asynchronous
   run (and against the chosen power with B = cohort, the invited rounds' number of steps, when
   the chosen B differs), metric with its CI over units, the paired difference, bytes per
   update, staleness and the simulated hours the asynchronous fleet took.

Writes benchmarks/results/async-fleet.json and prints the tables.

    .venv/bin/python -m benchmarks.async_fleet [--use-cases sine,kws] [--seeds 0,1,2]
        [--data-dir D] [--workers 2] [--period 3600] [--board esp32] [--kernel micropython]
        [--round-s S] [--quick] [--out F]
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.docgen.asynchronous import async_fleet as render
from broker_service.core.hyperparams import settings_for
from broker_service.observe.provenance import write_results
from broker_service.server.config import ServiceConfig
from broker_service.sim.bench import Entry, run_benches, sweep_parser
from broker_service.sim.buffered import AsyncSchedule
from broker_service.sim.usecase_cache import cached_use_case, use_case_options
from device_agent import battery, energy

ROOT = Path(__file__).resolve().parents[1]
POWERS = (0.0, 0.5, 1.0)
"""The staleness weight powers tried on validation devices (FedBuff's default is 0.5)."""
MAX_STALENESS = ServiceConfig().max_staleness
"""Updates more versions behind are refused, as the service does by default (reported: how many
were)."""


def arrival_seconds(use_case: str, board: str, kernel: str) -> float:
    """Seconds from a training wake to its update's arrival: the energy model's wake parts up to
    and including the uplink (benchmarks.battery's round of the use case)."""
    from benchmarks.battery import work_of

    parts = battery.training_wake_parts(energy.profile(board), work_of(use_case), 1.0, kernel, True)
    total = 0.0
    for name, (_, seconds) in parts.items():
        total += seconds
        if name == "uplink":
            break
    return total


def async_schedule_timeout(period: float, round_s: float) -> float:
    """The simulated step_timeout of a use case (sim.buffered.AsyncSchedule's default)."""
    return AsyncSchedule(buffer=1, period_s=period, round_s=round_s).timeout_s()


def async_entry(buffer: int, power: float, period: float, round_s: float) -> Entry:
    """TinyMetaFed asynchronous with buffer B and staleness power, named by both."""
    schedule = (
        ("buffer", buffer),
        ("staleness_power", power),
        ("period_s", period),
        ("round_s", round_s),
        ("max_staleness", MAX_STALENESS),
    )
    return Entry("async_b%d_p%g" % (buffer, power), "tinymetafed", schedule=schedule)


def buffer_sizes(cohort: int, devices: int) -> tuple[list[int], list[int]]:
    """The buffer sizes tried, and those not tried because more than `devices` (the training
    devices, each with one update a version) could never fill them."""
    sizes = sorted({max(1, cohort // 2), cohort, 2 * cohort})
    return [b for b in sizes if b <= devices], [b for b in sizes if b > devices]


def candidates(buffers: list[int], period: float, round_s: float) -> tuple[Entry, ...]:
    """The asynchronous settings tried on validation devices."""
    return tuple(async_entry(b, p, period, round_s) for b in buffers for p in POWERS)


def training_devices(use_case: str, data_dir: str | None, seed: int, quick: bool) -> int:
    """How many training devices the use case has (the bench's fold 0)."""
    settings = settings_for(use_case, quick=quick)
    options = use_case_options(use_case, settings)
    return len(cached_use_case(use_case, data_dir, seed, 0, options).device_ids)


def same_steps(best: Entry, cohort: int) -> tuple[Entry, ...]:
    """The chosen power with B = the cohort as well, when B differs: as many steps as the
    invited rounds, so what asynchrony does shows apart from what more steps do."""
    schedule = dict(best.schedule)
    if schedule["buffer"] == cohort:
        return ()
    return (
        async_entry(cohort, schedule["staleness_power"], schedule["period_s"], schedule["round_s"]),
    )


def validation_value(summary: dict) -> float:
    """Where a run's learning curve (validation devices) ends."""
    return float(summary["curve"][-1]["metric"])


def choose(doc: dict, tried: tuple[Entry, ...]) -> tuple[Entry, list[dict]]:
    """The candidate whose validation curve ends best, and every candidate's row."""
    rows = []
    for entry in tried:
        summary = doc["algorithms"][entry.name]
        rows.append({**dict(entry.schedule), "validation": validation_value(summary)})
    pick = min if doc["metric"] == "mse" else max  # as UseCase.higher_is_better
    best = pick(range(len(rows)), key=lambda i: rows[i]["validation"])
    return tried[best], rows


def comparison_row(doc: dict, name: str) -> dict:
    """One entry of the comparison on test devices (`buffer` None for the invited rounds)."""
    a = doc["algorithms"][name]
    ablation = doc.get("ablations", {}).get(name, {})
    return {
        "use_case": doc["use_case"],
        "entry": name,
        "metric": doc["metric"],
        "final_metric": a["final_metric"],
        "ci95": a["final_metric_ci95"],
        "seed_sd": a["final_metric_seed_sd"],
        "paired_vs_rounds": ablation.get("paired_vs_tinymetafed"),
        "updates": a["updates"],
        "steps": a["rounds"],
        "bytes_up_per_update": a["bytes_up_per_update"],
        "radio_bytes_per_update": a["radio_bytes_per_update"],
        "asynchronous": a.get("asynchronous"),
        "buffer": ablation.get("schedule", {}).get("buffer"),
    }


def main() -> int:
    parser = sweep_parser(__doc__)
    parser.set_defaults(use_cases="sine,kws")
    parser.add_argument("--period", type=float, default=3600.0, help="s between training wakes")
    parser.add_argument("--board", default="esp32", help="the board whose wake is timed")
    parser.add_argument("--kernel", default="micropython", choices=energy.KERNELS)
    parser.add_argument("--round-s", type=float, help="s from wake to arrival (else modelled)")
    parser.add_argument("--quick", action="store_true", help="the bench's --quick settings")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/async-fleet.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen, choices, rows, docs, arrival, untried = {}, {}, [], [], {}, {}
    for use_case in args.use_cases.split(","):
        cohort = int(settings_for(use_case, quick=args.quick)["cohort"])
        round_s = args.round_s or arrival_seconds(use_case, args.board, args.kernel)
        arrival[use_case] = round_s
        devices = training_devices(use_case, args.data_dir, seeds[0], args.quick)
        buffers, untried[use_case] = buffer_sizes(cohort, devices)
        if untried[use_case]:
            print(
                "%s: B = %s not tried (%d training devices)"
                % (use_case, ", ".join(map(str, untried[use_case])), devices)
            )
        tried = candidates(buffers, args.period, round_s)
        print("choosing on validation devices: %s, %d settings" % (use_case, len(tried)))
        (val,) = run_benches(
            [use_case],
            args.data_dir,
            [seeds[0]],
            quick=args.quick,
            algorithms=["tinymetafed"],
            workers=args.workers,
            verbose=False,
            extra=tried,
        )
        best, choices[use_case] = choose(val, tried)
        chosen[use_case] = dict(best.schedule)
        print("chose %s" % (best.name,))
        runs = (best,) + same_steps(best, cohort)
        (doc,) = run_benches(
            [use_case],
            args.data_dir,
            seeds,
            quick=args.quick,
            algorithms=["tinymetafed"],
            workers=args.workers,
            verbose=False,
            extra=runs,
        )
        rows += [comparison_row(doc, e.name) for e in (Entry("tinymetafed", ""), *runs)]
        docs.append(doc)
    seconds = round(time.perf_counter() - start, 1)
    out = {
        "seeds": seeds,
        "quick": args.quick,
        "seconds": seconds,
        "period_s": args.period,
        "board": args.board,
        "kernel": args.kernel,
        "round_s": arrival,
        "max_staleness": MAX_STALENESS,
        "step_timeout_s": {u: async_schedule_timeout(args.period, s) for u, s in arrival.items()},
        "choices": choices,
        "untried_buffers": untried,
        "chosen": chosen,
        "rows": rows,
        "settings": {doc["use_case"]: doc["settings"] for doc in docs},
    }
    write_results(args.out, out)
    print(render(out))
    print("took %.1f s; wrote %s" % (seconds, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
