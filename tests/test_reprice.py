"""benchmarks/reprice.py: the committed learning benchmarks carry today's energy price; a new
price moves the energy figures alone, by their MACs, and re-pricing is idempotent and reversible;
the seeds' energy verdicts and the MACs it rests on are those the benchmarks produced."""

import json
import re
import shutil

import pytest

from benchmarks import reprice
from broker_service.sim import pricing
from broker_service.sim.claims import criteria
from device_agent import energy

ENERGY = re.compile(r"energy|^provenance\.repriced")
"""Paths of the fields re-pricing may change: energy figures, energy verdicts and comparisons,
the price record, the re-pricing record."""


def _flat(x, path="", out=None):
    out = {} if out is None else out
    if isinstance(x, dict):
        for k, v in x.items():
            _flat(v, path + ("." if path else "") + str(k), out)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            _flat(v, "%s[%d]" % (path, i), out)
    else:
        out[path] = x
    return out


def _changed(before: dict, after: dict) -> set[str]:
    a, b = _flat(before), _flat(after)
    return {k for k in set(a) | set(b) if a.get(k, a) != b.get(k, b)}


@pytest.fixture
def results(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    for name in reprice.FILES:
        shutil.copy(reprice.RESULTS / name, folder / name)
    return folder


def test_the_committed_figures_are_at_todays_price():
    assert reprice.run(write=False) == {}, "run: .venv/bin/python -m benchmarks.reprice"


def test_every_learning_benchmark_with_energy_figures_is_repriced():
    for path in sorted(reprice.RESULTS.glob("*.json")):
        if path.name.startswith("device-"):
            continue
        if any(re.search("energy", k) for k in _flat(json.loads(path.read_text()))):
            assert path.name in reprice.FILES, path.name


def test_a_new_price_moves_energy_alone_and_comes_back(results, monkeypatch):
    before = {n: reprice.load(results / n) for n in reprice.FILES}
    ipm = {isa: dict(k) for isa, k in energy.INSTRUCTIONS_PER_MAC.items()}
    ipm["armv7em"]["micropython"] *= 0.5
    monkeypatch.setattr(energy, "INSTRUCTIONS_PER_MAC", ipm)
    changed = reprice.run(results)
    assert set(changed) >= set(reprice.BENCH_FILES) | set(reprice.OUTER_FILES)
    for name, (old, new) in changed.items():
        moved = _changed(old, new)
        assert moved and all(ENERGY.search(k) for k in moved), name
    sine = reprice.load(results / "bench-sine.json")
    old = before["bench-sine.json"]["algorithms"]["tinymetafed"]
    new = sine["algorithms"]["tinymetafed"]
    compute = old["macs_per_update"] * before["bench-sine.json"]["energy_model"]["mj_per_mac"]
    assert new["energy_mj_per_update"] == pytest.approx(old["energy_mj_per_update"] - compute / 2)
    assert sine["criteria"] == criteria(sine)
    assert sine["provenance"]["repriced"]["command"] == reprice.COMMAND
    assert reprice.run(results) == {}  # idempotent
    monkeypatch.undo()
    reprice.run(results)
    for name, doc in before.items():
        after = reprice.load(results / name)
        a, b = _flat(doc), _flat(after)
        for key in _changed(doc, after):
            assert ENERGY.search(key), (name, key)
            if isinstance(a.get(key), float) and not key.startswith("provenance"):
                assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-9), (name, key)


def test_a_moved_radio_model_is_refused(results, monkeypatch):
    doc = reprice.load(results / "bench-sine.json")
    board = dict(energy.PROFILES["nrf52840"], tx_ma=9.6)
    monkeypatch.setitem(energy.PROFILES, "nrf52840", board)
    with pytest.raises(reprice.RepriceError, match="radio model moved"):
        reprice.reprice(doc, "bench", {})


@pytest.mark.parametrize("use_case", ["sine", "omniglot", "kws", "occupancy"])
def test_seed_verdicts_and_macs_are_the_benchmarks(use_case):
    doc = reprice.load(reprice.RESULTS / ("bench-%s.json" % use_case))
    price = pricing.recorded(doc)["mj_per_mac"]
    for seed, verdicts in doc["per_seed_verdicts"].items():
        assert reprice.seed_verdict(doc, seed, price) == verdicts["less_energy"]
    for name in ("tinymetafed", "tinyreptile"):
        assert reprice.update_macs(use_case, name) == doc["algorithms"][name]["macs_per_update"]
    heads = reprice.load(reprice.RESULTS / "ablation-heads.json")["use_cases"][use_case]
    assert reprice.update_macs(use_case) == heads["rows"]["sgd_joint"]["macs_per_update"]


def test_the_sweep_verdicts_are_the_bench_files():
    sweep = reprice.load(reprice.RESULTS / reprice.SWEEP_FILE)
    benches = {}
    for name in reprice.BENCH_FILES[:4]:
        doc = reprice.load(reprice.RESULTS / name)
        benches[doc["use_case"]] = doc
    assert reprice.sweep_verdicts(sweep, benches) == sweep


def test_a_fresh_bench_document_records_its_price():
    record = pricing.energy_model()
    assert record["mj_per_mac"] == energy.compute_mj(1, energy.profile(), "micropython")
    assert pricing.recorded({}) is pricing.LEGACY
