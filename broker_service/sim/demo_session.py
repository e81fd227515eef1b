"""The demo's session settings: what `tinymetafed demo` runs, apart from the bench and `serve`.

Kept apart from sim/demo.py (which starts a broker, a service and a fleet) so the command line
can state the defaults without importing them.
"""

from __future__ import annotations

DEMO_DEVICES = 20
"""Simulated CPython agents of the demo (the MicroPython agent comes on top)."""
DEMO_SESSION = {"rounds": 200, "cohort": 8, "outer_lr": 3.0, "adapt_lr": 0.03}
"""The sine demo's session: rounds, cohort, server step β_0 and adaptation rate, chosen on
validation devices by benchmarks/demo_settings.py (benchmarks/results/demo-settings.json) so
that a short session shows learning; the bench and `serve` keep the use case's settings."""
OTHER_ROUNDS = 150
"""Rounds of a demo of another use case (its own settings otherwise)."""


def session_settings(use_case: str, rounds: int | None, cohort: int | None) -> tuple:
    """(rounds, cohort, training settings) of a demo: the sine demo's DEMO_SESSION, another use
    case's own settings for OTHER_ROUNDS rounds; `rounds` and `cohort` given win."""
    if use_case != "sine":
        return rounds or OTHER_ROUNDS, cohort, {}
    extra = {k: v for k, v in DEMO_SESSION.items() if k not in ("rounds", "cohort")}
    return rounds or DEMO_SESSION["rounds"], cohort or DEMO_SESSION["cohort"], extra
