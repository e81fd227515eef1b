"""The sine demo runs the session chosen on validation devices (benchmarks/demo_settings.py)."""

from __future__ import annotations

import importlib.util
import json

from broker_service.sim.demo_session import DEMO_SESSION, OTHER_ROUNDS, session_settings
from tests.conftest import REPO_ROOT

RESULTS = REPO_ROOT / "benchmarks" / "results" / "demo-settings.json"


def chooser():
    spec = importlib.util.spec_from_file_location(
        "demo_settings", REPO_ROOT / "benchmarks" / "demo_settings.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_runs_what_the_committed_choice_says():
    doc = json.loads(RESULTS.read_text())
    assert doc["chosen"]["settings"] == DEMO_SESSION
    rounds, cohort, extra = session_settings("sine", None, None)
    assert (rounds, cohort) == (DEMO_SESSION["rounds"], DEMO_SESSION["cohort"])
    assert extra == {k: v for k, v in DEMO_SESSION.items() if k not in ("rounds", "cohort")}


def test_the_committed_choice_follows_its_rule_on_validation_devices():
    doc = json.loads(RESULTS.read_text())
    module = chooser()
    grid = [c for c in doc["candidates"] if c["settings"] != doc["before"]["settings"]]
    assert module.choose(grid) == doc["chosen"]
    assert "validation" in doc["split"]
    chosen = [c for c in doc["candidates"] if c["settings"] == doc["chosen"]["settings"]]
    assert len(chosen) == len(doc["seeds"]) and all(c["refused_updates"] == 0 for c in chosen)


def test_the_rule_takes_the_cheapest_candidate_under_the_target():
    module = chooser()

    def row(rounds, ratio):
        return {"settings": {"rounds": rounds}, "ratio": ratio, "updates": rounds, "seed": 0}

    assert module.choose([row(100, 0.7), row(200, 0.45), row(300, 0.3)])["settings"] == {
        "rounds": 200
    }
    assert module.choose([row(100, 0.7), row(200, 0.65)])["settings"] == {"rounds": 200}


def test_other_use_cases_keep_their_own_settings():
    assert session_settings("kws", None, None) == (OTHER_ROUNDS, None, {})
    assert session_settings("sine", 7, 3)[:2] == (7, 3)
