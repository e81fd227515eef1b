"""Every federated algorithm learns, and an honest run refuses nothing (sim.learning).

Two places hold the invariant: a short meta-training of every federated algorithm on sine and on
kws with the shipped settings, and the committed bench JSON the results pages are made from.
"""

from __future__ import annotations

import json

import pytest

from broker_service.core.bounds import entry_budget
from broker_service.core.hyperparams import settings_for
from broker_service.core.strategies import ALGORITHMS
from broker_service.sim import learning
from tests.conftest import REPO_ROOT

RESULTS = REPO_ROOT / "benchmarks" / "results"
SHORT = {"sine": (400, 10), "kws": (10, 4)}
"""Rounds and validation devices of the short runs: long enough for every algorithm to clear
the rule on the shipped settings (TinyReptile, one device a round, is the slowest to move
sine), short enough for the suite (under a minute together on two cores)."""


def curve(*values: float) -> list[dict]:
    return [{"round": 10 * i, "metric": v} for i, v in enumerate(values)]


def entry(values, refused=0, rounds=0) -> dict:
    return {
        "curve": curve(*values),
        "per_seed": {"0": {"refused_updates": refused, "refused_rounds": rounds}},
    }


def test_the_rule_needs_five_percent_of_an_error_or_two_points_of_accuracy():
    assert learning.learned(2.0, 1.9, higher_is_better=False)
    assert not learning.learned(2.0, 1.91, higher_is_better=False)
    assert learning.learned(0.40, 0.42, higher_is_better=True)
    assert not learning.learned(0.40, 0.415, higher_is_better=True)
    assert not learning.learned(2.0, float("nan"), higher_is_better=False)
    assert not learning.learned(0.4, 0.3, higher_is_better=True)


def test_a_flat_curve_or_a_refused_update_fails_a_bench_document():
    doc = {
        "use_case": "sine",
        "metric": "mse",
        "algorithms": {
            "tinymetafed": entry([3.0, 1.5]),
            "reptile": entry([3.0, 3.0]),
            "fedavg": entry([3.0, 1.0], refused=4),
            "tinyreptile_equal_updates": entry([3.0, 2.0], rounds=1),
            "no_federation": entry([3.0, 3.0]),
        },
    }
    found = learning.failures(doc)
    assert len(found) == 3, found
    assert any(line.startswith("sine reptile: validation metric 3.0000") for line in found)
    assert "sine fedavg seed 0: 4 refused_updates" in found
    assert "sine tinyreptile_equal_updates seed 0: 1 refused_rounds" in found


def test_refusals_must_be_recorded():
    doc = {
        "use_case": "kws",
        "metric": "accuracy",
        "algorithms": {"fedavg": {"curve": curve(0.2, 0.5)}},
    }
    assert learning.failures(doc) == [
        "kws fedavg seed all: refused_updates not recorded",
        "kws fedavg seed all: refused_rounds not recorded",
    ]


@pytest.mark.parametrize("name", sorted(n for n, s in ALGORITHMS.items() if s.dense))
def test_dense_algorithms_are_asked_for_every_entry(name):
    settings = settings_for("sine")
    command = ALGORITHMS[name](settings).round_command(4, 4)
    assert (command["top_p"], command["values"], command["error_feedback"]) == (100.0, "f32", False)
    assert entry_budget(command, 1234) == 1234


@pytest.mark.parametrize("use_case", sorted(SHORT))
def test_every_federated_algorithm_learns_in_a_short_run(use_case, data_dir):
    rounds, devices = SHORT[use_case]
    doc = learning.short_runs(use_case, str(data_dir), rounds, devices)
    assert set(doc["algorithms"]) == {"tinymetafed", "tinyreptile", "reptile", "fedavg"}
    assert learning.failures(doc) == []


@pytest.mark.parametrize("use_case", ["sine", "omniglot", "kws", "occupancy"])
def test_every_federated_algorithm_learns_in_the_committed_bench(use_case):
    doc = json.loads((RESULTS / ("bench-%s.json" % use_case)).read_text())
    assert not doc["quick"]
    assert learning.failures(doc) == []
