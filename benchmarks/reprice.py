"""Re-price the learning benchmarks' committed energy figures with device_agent/energy.py as it is.

A simulated device update costs compute(its MACs) + radio(its MQTT messages), and the archived
runs' fleet figures add the model's reception by the devices outside the cohort, radio alone
(broker_service/sim/pricing.py). Compute is linear in the MACs, so a figure re-priced with a
recalibrated compute model moves by the MACs behind it × the change in the millijoules of a MAC:

- per device update: `macs_per_update`;
- a fleet total, a learning-curve point, the point that reaches the target: the device updates
  it counts (`updates`, or the rounds × the cohort for the rows that do not store them; the
  cohort is the updates per round of the file's own points) × `macs_per_update`;
- the server-step ablation, which stores no MACs: TinyMetaFed's MACs per update, a function of
  the model plan and the device settings (device_agent.round.round_macs), as the simulation
  counts them.

The radio part, counted from the payloads each run really sent, stays; when the radio model
itself has moved since a file was priced (its recorded radio check differs), nothing is
re-priced and the benchmark has to be re-run. The energy verdicts are derived again by
broker_service/sim/claims.py; every other figure is left as it is. A bench document stores no
seed's own energy figures, so a seed's energy verdict is taken with that seed's updates to the
target and the pooled radio energy per update, and only when it is the same for a radio part
anywhere between RADIO_BAND times the pooled one (else the command fails, naming the seed).

Each file records the price it now carries ("energy_model") and, in its provenance, that it was
re-priced, by what command and from which price. A file already at today's price is not
rewritten, so the command can be re-run after every recalibration of device_agent/energy.py:

    .venv/bin/python -m benchmarks.reprice            # re-price what moved, then make docs
    .venv/bin/python -m benchmarks.reprice --check    # exit 1 when a file is priced otherwise
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import sys
from importlib import import_module
from pathlib import Path

from broker_service.core.hyperparams import settings_for
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import ALGORITHMS
from broker_service.observe.provenance import commit
from broker_service.sim import pricing
from broker_service.sim.claims import EQUAL_UPDATES, criteria, energy_comparisons, verdict
from broker_service.usecases.registry import USE_CASES
from device_agent.round import effective_split, round_macs, round_settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMAND = "-m benchmarks.reprice"

BENCH_FILES = (
    "bench-sine.json",
    "bench-omniglot.json",
    "bench-kws.json",
    "bench-occupancy.json",
    "omniglot-rotations.json",
)
"""Bench documents (broker_service/sim/bench_pool.py): "algorithms" with their learning curves."""
HEAD_FILES = ("ablation-heads.json", "ablation-heads-ridge.json")
"""The heads ablation: per use case, "rows" with MACs and energy per update and fleet energy."""
OUTER_FILES = ("ablation-outer.json", "ablation-outer-yogi.json", "ablation-outer-both.json")
"""The server-step ablation: per use case, TinyMetaFed "configs" with their budgets and curves."""
SWEEP_FILE = "seed-sweep.json"
"""The seed sweep's summary: each use case's and each seed's verdicts, from the bench files."""
FILES = (*BENCH_FILES, *HEAD_FILES, *OUTER_FILES, SWEEP_FILE)
"""Every committed learning-benchmark file with energy figures or energy verdicts (the device
benchmarks price their own: device-*.json)."""

RADIO_BAND = (0.5, 1.5)
"""The range, as multiples of the pooled radio energy per update, over which a seed's energy
verdict must not change to be derived without re-running the seed."""


class RepriceError(Exception):
    """A figure that cannot be re-priced from what the files store."""


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def dump(doc: dict) -> str:
    """A results document as benchmarks write it (provenance.write_results)."""
    return json.dumps(doc, indent=1) + "\n"


# --- MACs -----------------------------------------------------------------------------------


def model_spec(use_case: str) -> dict:
    """The use case's default model spec, without reading its data."""
    module = import_module(USE_CASES[use_case][0])
    default = getattr(module, "default_spec", None)
    return default() if default else module.SPEC


def update_macs(use_case: str, algorithm: str = "tinymetafed", **overrides) -> int:
    """MACs of one device update of a streaming algorithm (TinyMetaFed, TinyReptile) with the
    use case's settings, as broker_service.core.device_round.simulate_round counts them."""
    strategy = ALGORITHMS[algorithm](settings_for(use_case, **overrides))
    plan = NumpyNet(model_spec(use_case)).plan
    s = round_settings(strategy.round_command(0, 0))
    s["split"] = effective_split(plan, s["split"])
    n = strategy.samples_per_update()
    recon = min(int(s["recon_samples"]), n) if s["split"] else 0
    return round_macs(plan, s, recon, min(int(s["adapt_samples"]), n - recon))


# --- re-pricing ------------------------------------------------------------------------------


def _shift(entry: dict | None, key: str, macs: float, delta: float) -> None:
    """Move entry[key] by macs × delta (nothing for an absent entry or no MACs)."""
    if entry is not None and macs:
        entry[key] = entry[key] + macs * delta


def _shift_points(points: list[dict] | None, per_update: int, delta: float) -> None:
    for point in points or ():
        _shift(point, "fleet_energy_mj", point["updates"] * per_update, delta)


def reprice_bench(doc: dict, delta: float) -> None:
    """Every algorithm's energy per update, fleet energy, curve and to-target point, then the
    energy claim and each seed's energy verdict."""
    for a in doc["algorithms"].values():
        m = a["macs_per_update"]
        _shift(a, "energy_mj_per_update", m, delta)
        _shift(a, "fleet_energy_mj", a["updates"] * m, delta)
        _shift_points(a["curve"], m, delta)
        _shift(
            a.get("to_target"),
            "fleet_energy_mj",
            (a.get("to_target") or {}).get("updates", 0) * m,
            delta,
        )


def rederive_bench_verdicts(doc: dict, mj_per_mac: float) -> None:
    """The energy claim from the document's figures, each seed's energy verdict (seed_verdict)."""
    claims = criteria(doc)
    if "less_energy" in claims:
        doc["criteria"]["less_energy"] = claims["less_energy"]
    for seed, verdicts in doc.get("per_seed_verdicts", {}).items():
        if "less_energy" in verdicts:
            verdicts["less_energy"] = seed_verdict(doc, seed, mj_per_mac)


def _seed_figures(a: dict, seed: str, mj_per_mac: float, scale: float) -> dict:
    """An algorithm's energy figures on one seed: compute exact, radio the pooled per update
    times `scale`."""
    m = a["macs_per_update"]
    radio = a["energy_mj_per_update"] - m * mj_per_mac
    per_update = m * mj_per_mac + scale * radio
    reached = a["per_seed"][seed]["to_target_updates"]
    return {
        "energy_mj_per_update": per_update,
        "fleet_energy_mj": a["updates"] * per_update,
        "to_target": None if reached is None else {"fleet_energy_mj": reached * per_update},
    }


def seed_verdict(doc: dict, seed: str, mj_per_mac: float) -> str:
    """One seed's energy verdict at the price `mj_per_mac` (RepriceError when it turns on the
    seed's radio energy within RADIO_BAND)."""
    a = doc["algorithms"]
    outcomes = set()
    for mine, theirs in itertools.product(RADIO_BAND, repeat=2):
        tmf = _seed_figures(a["tinymetafed"], seed, mj_per_mac, mine)
        tr = _seed_figures(a["tinyreptile"], seed, mj_per_mac, theirs)
        tr_u = _seed_figures(a.get(EQUAL_UPDATES, a["tinyreptile"]), seed, mj_per_mac, theirs)
        comparisons = energy_comparisons(tmf, tr, tr_u)
        outcomes.add((tuple(c["holds"] for c in comparisons), verdict(comparisons)))
    if len(outcomes) > 1:
        raise RepriceError(
            "%s seed %s: the energy verdict turns on the seed's radio energy; re-run the bench"
            % (doc["use_case"], seed)
        )
    return outcomes.pop()[1]


def _cohort(use_case: str, rows: dict) -> int:
    """The updates per round of a use case's rows, from the points that reach the target."""
    ratios = {
        r["to_target"]["updates"] / r["to_target"]["round"]
        for r in rows.values()
        if r.get("to_target") and r["to_target"]["round"]
    }
    if len(ratios) != 1 or not float(next(iter(ratios))).is_integer():
        raise RepriceError("%s: no single cohort in the rows (%s)" % (use_case, sorted(ratios)))
    return int(ratios.pop())


def reprice_heads(doc: dict, delta: float) -> None:
    """Each row's energy per update, fleet energy (rounds × cohort updates) and to-target point."""
    for name, u in doc["use_cases"].items():
        updates = u["rounds"] * _cohort(name, u["rows"])
        for r in u["rows"].values():
            m = r["macs_per_update"]
            _shift(r, "energy_mj_per_update", m, delta)
            _shift(r, "fleet_energy_mj", updates * m, delta)
            tt = r.get("to_target")
            _shift(tt, "fleet_energy_mj", (tt or {}).get("updates", 0) * m, delta)


def _spread(values: list[float]) -> float:
    """benchmarks/outer.py's spread: (max − min) / min of positive values."""
    return float((max(values) - min(values)) / min(values)) if values and min(values) > 0 else 0.0


def reprice_outer(doc: dict, delta: float) -> None:
    """Each configuration's budget, curve and to-target point, at TinyMetaFed's MACs per update
    (the configurations differ on the server alone), and the spread of the fleet energies."""
    for name, u in doc["use_cases"].items():
        m = update_macs(name)
        for c in u["configs"].values():
            _shift(c["budget"], "fleet_energy_mj", c["budget"]["updates"] * m, delta)
            _shift_points(c["curve"], m, delta)
            tt = c.get("to_target")
            _shift(tt, "fleet_energy_mj", (tt or {}).get("updates", 0) * m, delta)
        u["fleet_energy_spread"] = _spread(
            [c["budget"]["fleet_energy_mj"] for c in u["configs"].values()]
        )


def _record(doc: dict, before: dict, now: dict, when: dict) -> dict:
    """The document with its "energy_model" (after "board" where there is one) and its
    provenance's "repriced" record."""
    out = {}
    for key, value in doc.items():
        if key == "energy_model":
            continue
        out[key] = value
        if key == "board":
            out["energy_model"] = now
    out.setdefault("energy_model", now)
    prov = out.pop("provenance", None) or {}
    prov["repriced"] = {**when, "from_mj_per_mac": before["mj_per_mac"]}
    out["provenance"] = prov
    return out


def reprice(doc: dict, kind: str, when: dict) -> dict:
    """The document at today's price (itself when already there). RepriceError when the radio
    model moved since it was priced."""
    before = pricing.recorded(doc)
    now = pricing.energy_model(before["board"], before["kernel"])
    if before["radio_reference_mj"] != now["radio_reference_mj"]:
        raise RepriceError(
            "the radio model moved since these figures were priced (radio check %s mJ, now %s): "
            "re-run the benchmark" % (before["radio_reference_mj"], now["radio_reference_mj"])
        )
    if before["mj_per_mac"] == now["mj_per_mac"]:
        return doc
    out = json.loads(json.dumps(doc))
    delta = now["mj_per_mac"] - before["mj_per_mac"]
    if kind == "bench":
        reprice_bench(out, delta)
        rederive_bench_verdicts(out, now["mj_per_mac"])
    elif kind == "heads":
        reprice_heads(out, delta)
    else:
        reprice_outer(out, delta)
    return _record(out, before, now, when)


def sweep_verdicts(sweep: dict, benches: dict[str, dict]) -> dict:
    """The seed sweep's summary with its energy verdicts taken from the bench documents."""
    out = json.loads(json.dumps(sweep))
    for row in out["rows"]:
        doc = benches[row["use_case"]]
        if "less_energy" in row["verdicts"]:
            row["verdicts"]["less_energy"] = doc["per_seed_verdicts"][str(row["seed"])][
                "less_energy"
            ]
    for name, verdicts in out["verdicts"].items():
        if "less_energy" in verdicts:
            verdicts["less_energy"] = benches[name]["criteria"]["less_energy"]["verdict"]
    return out


def kind_of(name: str) -> str:
    return "bench" if name in BENCH_FILES else ("heads" if name in HEAD_FILES else "outer")


def run(results: Path = RESULTS, write: bool = True) -> dict[str, tuple[dict, dict]]:
    """Re-price every file of FILES in `results`; returns {file: (before, after)} for the files
    that change (written when `write`)."""
    when = {
        "command": COMMAND,
        "commit": commit(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    docs = {name: load(results / name) for name in FILES if (results / name).is_file()}
    new = {
        name: reprice(doc, kind_of(name), when) for name, doc in docs.items() if name != SWEEP_FILE
    }
    if SWEEP_FILE in docs:
        benches = {new[f]["use_case"]: new[f] for f in BENCH_FILES[:4] if f in new}
        sweep = sweep_verdicts(docs[SWEEP_FILE], benches)
        if sweep != docs[SWEEP_FILE]:
            prov = sweep.pop("provenance", None) or {}
            prov["repriced"] = {k: when[k] for k in ("command", "commit", "date")}
            sweep["provenance"] = prov
        new[SWEEP_FILE] = sweep
    changed = {
        name: (docs[name], new[name]) for name in docs if dump(new[name]) != dump(docs[name])
    }
    if write:
        for name, (_, doc) in changed.items():
            (results / name).write_text(dump(doc))
    return changed


def headline(changed: dict[str, tuple[dict, dict]]) -> list[str]:
    """Energy per device update before → after, per file and algorithm (or row), and every
    energy verdict that changed."""
    lines = []
    for name, (before, after) in changed.items():
        lines.append("%s:" % name)
        for label, old, new, unit in _per_update(before, after):
            lines.append("  %-34s %12.4f → %12.4f %s" % (label, old, new, unit))
        for path, old, new in _verdict_changes(before, after):
            lines.append("  verdict %s: %s → %s" % (path, old, new))
    return lines


def _per_update(before: dict, after: dict):
    if "algorithms" in before:
        for k, a in before["algorithms"].items():
            new = after["algorithms"][k]["energy_mj_per_update"]
            yield k, a["energy_mj_per_update"], new, "mJ per update"
    for uc, u in before.get("use_cases", {}).items():
        for k, r in u.get("rows", {}).items():
            new = after["use_cases"][uc]["rows"][k]["energy_mj_per_update"]
            yield "%s %s" % (uc, k), r["energy_mj_per_update"], new, "mJ per update"
        for k, c in u.get("configs", {}).items():
            new = after["use_cases"][uc]["configs"][k]["budget"]["fleet_energy_mj"]
            yield "%s %s" % (uc, k), c["budget"]["fleet_energy_mj"] / 1e3, new / 1e3, "J fleet"


def _verdict_changes(before: dict, after: dict):
    pairs = []
    if "criteria" in before and "less_energy" in before["criteria"]:
        pairs.append(("criteria", before["criteria"], after["criteria"]))
    for seed, v in before.get("per_seed_verdicts", {}).items():
        pairs.append(("seed " + seed, v, after["per_seed_verdicts"][seed]))
    for i, row in enumerate(before.get("rows", []) if isinstance(before.get("rows"), list) else []):
        pairs.append(
            (
                "%s seed %s" % (row["use_case"], row["seed"]),
                row["verdicts"],
                after["rows"][i]["verdicts"],
            )
        )
    for uc, v in (before.get("verdicts") or {}).items():
        pairs.append((uc, v, after["verdicts"][uc]))
    for path, old, new in pairs:
        a = old.get("less_energy")
        b = new.get("less_energy")
        a, b = (a.get("verdict"), b.get("verdict")) if isinstance(a, dict) else (a, b)
        if a != b:
            yield path, a, b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    parser.add_argument("--results", default=str(RESULTS), help="the results folder")
    args = parser.parse_args(argv)
    try:
        changed = run(Path(args.results), write=not args.check)
    except RepriceError as error:
        print("error: %s" % error, file=sys.stderr)
        return 2
    for line in headline(changed):
        print(line)
    if not changed:
        print("every energy figure is at the price of device_agent/energy.py")
        return 0
    if args.check:
        print("stale: run .venv/bin/python -m benchmarks.reprice")
        return 1
    print(
        "re-priced %d files; now run .venv/bin/python -m benchmarks.make_docs --write"
        % len(changed)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
