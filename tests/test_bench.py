"""The bench's accounting and claims: fleet bytes and energy as the broker sends them, equal
budgets, paired comparisons over units, verdicts, and the tuning search on validation devices."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import ablation_ef
from broker_service.core.cohort import round_cohort
from broker_service.core.hyperparams import settings_for
from broker_service.core.strategies import Reptile, TinyMetaFed, TinyReptile, wire_command
from broker_service.sim import bench, claims, simulation, tuning
from broker_service.sim.clients import stored_data_update
from broker_service.usecases.sine import SineUseCase
from device_agent import codec

ROOT = Path(__file__).resolve().parents[1]


def test_the_fetch_packets_are_sized_as_the_agent_builds_them():
    from broker_service.server.mqtt import subscribe_size, unsubscribe_size
    from device_agent.topics import Topics
    from device_agent.transport import unsubscribe_packet

    topic = Topics().model
    assert unsubscribe_size(topic) == len(unsubscribe_packet(7, topic))
    assert subscribe_size(topic) == unsubscribe_size(topic) + 1  # and the QoS byte
    assert unsubscribe_size("t" * 200) == len(unsubscribe_packet(7, "t" * 200))  # 2-byte length


def _tiny_run(strategy_cls, rounds=3, cohort=2, fleet=6):
    use_case = SineUseCase(fleet_size=fleet)
    settings = settings_for("sine", rounds=rounds, cohort=cohort, eval_every=rounds)
    strategy = strategy_cls(settings)
    return use_case, strategy, simulation.run(strategy, use_case, settings, 0, [], [])


@pytest.mark.parametrize("strategy_cls", [TinyMetaFed, TinyReptile, Reptile])
def test_only_the_cohort_receives_the_model(strategy_cls):
    use_case, strategy, result = _tiny_run(strategy_cls)
    k = strategy.cohort_size()
    model = simulation.model_payload_bytes(len(result.theta), strategy.model_values())
    sent = [wire_command(strategy.round_command(t, t)) for t in range(3)]
    commands = sum(len(codec.encode_command(c, t, t)) for t, c in enumerate(sent))
    assert result.updates == 3 * k and result.model_bytes == model
    assert result.bytes_down == 3 * k * model + k * commands
    assert result.fleet_bytes_down == result.bytes_down  # no device outside the cohort
    assert result.fleet_energy_mj == pytest.approx(result.device_energy_mj)
    assert result.device_energy_mj > 0
    # MQTT framing on top of the payloads, and the fetch's and acknowledgements' packets: three
    # PUBLISHes, SUBSCRIBE and UNSUBSCRIBE (under 60 B each with these topics), five ACKs
    assert result.bytes_up + result.bytes_down < result.radio_bytes
    assert result.radio_bytes < result.bytes_up + result.bytes_down + 3 * k * (5 * 60 + 5 * 5)
    summary = simulation.summarise(result, use_case)
    last = summary["curve"][-1]
    assert (last["round"], last["updates"]) == (3, 3 * k)
    assert last["fleet_bytes"] == result.bytes_up + result.fleet_bytes_down
    assert summary["energy_mj_per_update"] == pytest.approx(result.device_energy_mj / (3 * k))


@pytest.mark.parametrize("values", ["f16", "int8"])
def test_a_compressed_model_shrinks_the_downlink_and_devices_train_on_what_is_sent(values):
    use_case = SineUseCase(fleet_size=6)
    settings = settings_for("sine", rounds=3, cohort=2, eval_every=3, model_values="f32")
    f32 = simulation.run(TinyMetaFed(settings), use_case, settings, 0, [], [])
    small = dict(settings, model_values=values)
    packed = simulation.run(TinyMetaFed(small), use_case, small, 0, [], [])
    n = len(f32.theta)
    assert packed.model_bytes == simulation.model_payload_bytes(n, values)
    assert packed.model_bytes < f32.model_bytes
    assert packed.radio_bytes < f32.radio_bytes
    # the devices trained on another θ_g (the decoded one), so the updates differ a little
    assert not np.array_equal(packed.theta, f32.theta)
    assert np.allclose(packed.theta, f32.theta, atol=0.05)
    # TinyReptile sends float32 whatever the setting
    assert TinyReptile(small).model_values() == "f32"


def test_tinyreptile_gets_an_equal_update_run_of_k_times_the_rounds():
    settings = settings_for("sine", quick=True)
    jobs = bench.plan_jobs("sine", None, [0, 1], settings, None, bench.ORDER)
    by_name = {(j.seed, j.entry.name): j for j in jobs}
    k, rounds = int(settings["cohort"]), int(settings["rounds"])
    long = by_name[(1, bench.EQUAL_UPDATES)]
    assert long.entry.algorithm == "tinyreptile" and long.settings["rounds"] == k * rounds
    assert by_name[(1, "tinyreptile")].settings["rounds"] == rounds
    assert len(jobs) == 2 * (len(bench.ORDER) + 1)
    assert [e.name for e in bench.entries(["tinyreptile"], 1)] == ["tinyreptile"]


def test_ablations_run_tinymetafed_variants_at_its_rounds_and_cohort():
    settings = settings_for("sine", quick=True)
    plain = bench.plan_jobs("sine", None, [0], settings, None, ["tinymetafed"])
    jobs = bench.plan_jobs("sine", None, [0], settings, None, ["tinymetafed"], ablations=True)
    assert [j.entry.name for j in plain] == ["tinymetafed"]
    by_name = {j.entry.name: j for j in jobs}
    assert set(by_name) == {"tinymetafed"} | {e.name for e in bench.ABLATIONS}
    for entry in bench.ABLATIONS:
        own = by_name[entry.name].settings
        assert entry.algorithm == "tinymetafed"
        assert {k: own[k] for k, _ in entry.overrides} == dict(entry.overrides)
        assert {k: v for k, v in own.items() if k not in dict(entry.overrides)} == {
            k: v for k, v in settings.items() if k not in dict(entry.overrides)
        }
    assert by_name["tinymetafed_no_ef"].settings["error_feedback"] is False
    assert bench.entries(["tinyreptile"], 5, ablations=True)[0].name == "tinyreptile"


def test_bench_overrides_must_be_known_untuned_settings():
    bench.check_overrides({"top_p": 5.0})
    for bad in ({"adapt_lr": 0.1}, {"rotation": True}, {"quick": {}}):
        with pytest.raises(ValueError):
            bench.check_overrides(bad)
    for key, value in (("rotations", True), ("rotations", False), ("residual_decay", 0.9)):
        with pytest.raises(ValueError, match="%s is a removed setting" % key):
            bench.check_overrides({key: value})
    with pytest.raises(ValueError, match="aggregation=trimmed_mean is a removed setting value"):
        bench.check_overrides({"aggregation": "trimmed_mean"})


def _staleness_run(**overrides):
    use_case = SineUseCase(fleet_size=3)
    settings = settings_for("sine", rounds=8, cohort=2, eval_every=8, **overrides)
    strategy = TinyMetaFed(settings)
    return strategy, simulation.run(strategy, use_case, settings, 0, [], [])


def test_staleness_counts_the_rounds_each_device_was_away():
    """Every error-feedback update records the rounds its device missed (-1 the first time),
    as the cohorts say; the summary pools them."""
    strategy, result = _staleness_run()
    last: dict[str, int] = {}
    expected = []
    for t in range(8):
        for device in round_cohort(SineUseCase(fleet_size=3).device_ids, 2, 0, t):
            expected.append(t - last[device] - 1 if device in last else -1)
            last[device] = t
    assert [a for a, _, _ in result.staleness] == expected
    assert all(d > 0 for _, _, d in result.staleness)
    assert all(r == 0 for a, r, _ in result.staleness if a < 0)
    summary = simulation.summarise(result, SineUseCase(fleet_size=3))["staleness"]
    away = [a for a in expected if a >= 0]
    assert summary["updates"] == 16
    assert summary["rounds_away"]["mean"] == pytest.approx(np.mean(away))
    assert summary["first_participations"] == pytest.approx(3 / 16)
    _, off = _staleness_run(error_feedback=False)
    assert off.staleness == [] and "staleness" not in simulation.summarise(off, SineUseCase(3))


def test_ablation_document_pairs_each_variant_with_tinymetafed():
    """A short bench with --ablations: every variant's rows, paired over the same test tasks,
    at TinyMetaFed's device updates; staleness only where error feedback is on."""
    (doc,) = bench.run_benches(
        ["sine"],
        None,
        [0],
        rounds=6,
        quick=True,
        algorithms=["tinymetafed"],
        workers=1,
        verbose=False,
        ablations=True,
    )
    algos = doc["algorithms"]
    assert set(doc["ablations"]) == {e.name for e in bench.ABLATIONS}
    for a in doc["ablations"].values():
        assert a["updates"] == a["baseline_updates"] == algos["tinymetafed"]["updates"]
        assert a["paired_vs_tinymetafed"]["units"] == algos["tinymetafed"]["units"]
    assert "staleness" in algos["tinymetafed"] and "staleness" not in algos["tinymetafed_no_ef"]
    rows = ablation_ef.ablation_rows(doc)
    assert [r["entry"] for r in rows] == ["tinymetafed"] + [e.name for e in bench.ABLATIONS]
    assert len(ablation_ef.table(rows).splitlines()) == 2 + len(rows)


def test_tuned_settings_reach_each_job():
    doc = {
        "folds": [
            {"fold": 0, "algorithms": {"reptile": {"chosen": {"adapt_lr": 0.003}}}},
            {"fold": 1, "algorithms": {"reptile": {"chosen": {"adapt_lr": 0.007}}}},
        ]
    }
    assert tuning.tuned_overrides(doc, "reptile", 1) == {"adapt_lr": 0.007}
    assert tuning.tuned_overrides(doc, "fedavg", 0) == {} == tuning.tuned_overrides(None, "x")
    jobs = bench.plan_jobs("sine", None, [0], settings_for("sine"), doc, ["reptile", "fedavg"])
    assert [j.settings["adapt_lr"] for j in jobs] == [0.003, settings_for("sine")["adapt_lr"]]


def test_mini_batches_step_at_the_batch_times_the_per_sample_rate():
    use_case, strategy, _ = _tiny_run(Reptile, rounds=1)
    net = bench.NumpyNet(use_case.spec)
    theta = simulation.initial_theta(net, 3)
    xs, ys = use_case.stream(use_case.device_ids[0], 10, np.random.default_rng(1))
    settings = dict(strategy.settings, inner_epochs=1, inner_batch=10, adapt_lr=0.01)
    result = stored_data_update(net, theta, xs, ys, {"seed": 0, "version": 0, "round": 0}, settings)
    _, _, delta = codec.decode(result.payload)
    _, grad = net.gradient(theta, xs, ys)
    np.testing.assert_allclose(delta, -10 * 0.01 * grad, rtol=1e-4, atol=1e-7)
    assert result.macs == 10 * net.plan.train_step_macs(net.plan.param_layers[0])


def _entry(per_unit, energy=1.0, fleet=10.0, target=None, std=0.1):
    mean = float(np.mean(list(per_unit.values())))
    test = {"mean": mean, "ci95": 0.0, "per_unit": per_unit}
    return {
        "final_metric": mean,
        "tests": {"online": test, "multipass": test},
        "energy_mj_per_update": energy,
        "bytes_up_per_update": 100 * energy,
        "bytes_down_per_update": 1000.0,
        "fleet_energy_mj": fleet,
        "fleet_bytes_up": 10 * fleet,
        "fleet_bytes_down": 100 * fleet,
        "to_target": target,
        "curve_std": std,
    }


def _point(updates, mj):
    return {"round": updates, "updates": updates, "fleet_energy_mj": mj, "fleet_bytes": 10 * mj}


def test_claims_rest_on_their_comparisons():
    units = ["u%d" % i for i in range(6)]
    doc = {
        "metric": "accuracy",
        "algorithms": {
            "tinymetafed": _entry(
                {u: 0.80 + 0.01 * i for i, u in enumerate(units)}, 0.5, 12.0, _point(30, 6.0)
            ),
            "tinyreptile": _entry({u: 0.70 for u in units}, 1.0, 10.0, None, 0.2),
            bench.EQUAL_UPDATES: _entry(
                {u: 0.81 + 0.01 * i for i, u in enumerate(units)}, 1.0, 30.0, _point(10, 4.0)
            ),
            "no_federation": _entry({u: 0.5 for u in units}),
        },
    }
    c = claims.criteria(doc)
    energy = {x["basis"]: x["holds"] for x in c["less_energy"]["comparisons"]}
    assert energy == {
        "per device update": True,
        "fleet, equal rounds": False,
        "fleet, equal device updates": True,
        "fleet, to the target": False,
    }
    assert c["less_energy"]["verdict"] == "held with a caveat"
    assert c["faster_convergence"]["verdict"] == "not held"
    few = c["better_few_shot"]["comparisons"]
    assert few[0]["holds"] is True and few[0]["difference"] == pytest.approx(0.125)
    assert few[1]["holds"] is False and few[1]["difference"] == pytest.approx(-0.01)
    assert c["beats_no_federation"]["verdict"] == "held"
    assert claims.criteria({"metric": "mse", "algorithms": {"tinymetafed": {}}}) == {}


def test_paired_difference_counts_lower_error_as_better_and_ties_cover_zero():
    doc = {
        "metric": "mse",
        "algorithms": {
            "a": _entry({"x": 1.0, "y": 2.0, "z": 3.0}),
            "b": _entry({"x": 1.5, "y": 1.5, "z": 3.5}),
        },
    }
    diff = claims.paired_difference(doc, "a", "b")
    assert diff["difference"] == pytest.approx(1 / 6) and diff["units"] == 3
    assert diff["ci95"] > diff["difference"]
    assert claims._metric_comparison(doc, "t", "a", "b")["holds"] is None
    assert claims.verdict([{"holds": None}]) == "not held"
    assert claims.verdict([{"holds": True}, {"holds": True}]) == "held"


def test_candidates_are_a_latin_hypercube_in_the_log_box():
    points = tuning.candidates(8)
    assert points == tuning.candidates(8) and len(points) == 8
    for key, (lo, hi) in tuning.SEARCH.items():
        slots = [
            int(8 * (math.log(p[key]) - math.log(lo)) / (math.log(hi) - math.log(lo)))
            for p in points
        ]
        assert sorted(slots) == list(range(8)), key
    assert tuning.score(np.array([np.nan]), True) == -math.inf
    assert tuning.score(np.array([2.0, 4.0]), False) == -3.0


def test_box_candidates_use_every_log_slice_of_their_own_box_once():
    box = {"outer_lr": (1e-3, 0.3)}
    points = tuning.box_candidates(box, 5, 51)
    assert points == tuning.box_candidates(box, 5, 51) != tuning.box_candidates(box, 5, 53)
    lo, hi = (math.log(v) for v in box["outer_lr"])
    slots = [int(5 * (math.log(p["outer_lr"]) - lo) / (hi - lo)) for p in points]
    assert sorted(slots) == list(range(5)) and all(set(p) == {"outer_lr"} for p in points)


def test_tuning_never_draws_test_devices(monkeypatch):
    asked = []
    original = SineUseCase.new_device_episodes

    def spy(self, count, rng, split="test", shots=None):
        asked.append(split)
        return original(self, count, rng, split, shots)

    monkeypatch.setattr(SineUseCase, "new_device_episodes", spy)
    base = settings_for("sine", rounds=2, cohort=2, final_devices=3)
    tried = tuning.stage_one(1, n=2)

    def measure():
        for job in tuning.plan_tuning("sine", None, base, tried):
            (_, fold, algorithm, index), value, _ = tuning.tuning_job(job)
            tried[(fold, algorithm)][index]["validation_metric"] = value
            assert job[5]["rounds"] == (4 if algorithm == "tinyreptile" else 2)

    measure()
    tuning.add_stage_two(tried, higher=False, n=2)
    measure()
    assert set(asked) == {"validation"}
    doc = tuning.tuning_document("sine", base, tried, [{}], 1.0, False)
    fedavg = doc["folds"][0]["algorithms"]["fedavg"]
    assert set(fedavg["chosen"]) == {"recon_lr", "adapt_lr"}
    assert [c["stage"] for c in fedavg["candidates"]] == [1, 1, 2, 2]
    best = min(c["validation_metric"] for c in fedavg["candidates"])
    assert fedavg["validation_metric"] == best
    # a second run reuses what was measured, stage by stage
    again = tuning.stage_one(1, n=2)
    assert tuning.resume(doc, again) == 2 * len(tuning.USES)
    tuning.add_stage_two(again, higher=False, n=2)
    assert tuning.resume(doc, again) == 2 * len(tuning.USES)
    assert tuning.plan_tuning("sine", None, base, again) == []


def test_refinements_stay_in_the_box_around_the_best():
    best = {"recon_lr": 0.4, "adapt_lr": 0.01, "outer_lr": 0.5}
    points = tuning.refinements(best, "fedavg", n=4)
    for p in points:
        assert p["outer_lr"] == 0.5  # FedAvg does not use β
        assert 0.4 / tuning.REFINE_FACTOR <= p["recon_lr"] <= tuning.SEARCH["recon_lr"][1]
        assert 0.01 / tuning.REFINE_FACTOR <= p["adapt_lr"] <= 0.01 * tuning.REFINE_FACTOR
