"""The sine demo runs the session chosen on validation devices (benchmarks/demo_settings.py)."""

from __future__ import annotations

import json

from benchmarks import demo_settings
from broker_service.sim.demo_session import DEMO_SESSION, OTHER_ROUNDS, session_settings
from tests.conftest import REPO_ROOT

RESULTS = REPO_ROOT / "benchmarks" / "results" / "demo-settings.json"


def test_the_demo_runs_what_the_committed_choice_says():
    doc = json.loads(RESULTS.read_text())
    assert doc["chosen"]["settings"] == DEMO_SESSION
    rounds, cohort, extra = session_settings("sine", None, None)
    assert (rounds, cohort) == (DEMO_SESSION["rounds"], DEMO_SESSION["cohort"])
    assert extra == {k: v for k, v in DEMO_SESSION.items() if k not in ("rounds", "cohort")}


def test_the_committed_choice_follows_its_rule_on_validation_devices():
    doc = json.loads(RESULTS.read_text())
    grid = [c for c in doc["candidates"] if c["settings"] != doc["before"]["settings"]]
    assert demo_settings.choose(grid) == doc["chosen"]
    assert "validation" in doc["split"]
    chosen = [c for c in doc["candidates"] if c["settings"] == doc["chosen"]["settings"]]
    assert len(chosen) == len(doc["seeds"]) and all(c["refused_updates"] == 0 for c in chosen)


def test_the_rule_takes_the_cheapest_candidate_under_the_target():
    def row(rounds, ratio):
        return {"settings": {"rounds": rounds}, "ratio": ratio, "updates": rounds, "seed": 0}

    assert demo_settings.choose([row(100, 0.7), row(200, 0.45), row(300, 0.3)])["settings"] == {
        "rounds": 200
    }
    assert demo_settings.choose([row(100, 0.7), row(200, 0.65)])["settings"] == {"rounds": 200}


def test_other_use_cases_keep_their_own_settings():
    assert session_settings("kws", None, None) == (OTHER_ROUNDS, None, {})
    assert session_settings("sine", 7, 3)[:2] == (7, 3)
