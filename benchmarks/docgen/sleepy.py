"""Sleepy devices over mosquitto with the real service against invited rounds with the always-on
fleet, at equal device updates (benchmarks/sleepy_fleet.py)."""

from __future__ import annotations

from broker_service.core.hyperparams import settings_for
from broker_service.observe.tables import markdown_table

from .common import NONE, Block, figure, listed


def _paired(p: dict | None) -> str:
    return NONE if not p else "%+.4f ± %.4f" % (p["difference"], p["ci95"])


def _of_full(use_case: str, rounds: int) -> str:
    """ " (of its N)" when the run made fewer rounds than the use case's settings."""
    full = int(settings_for(use_case)["rounds"])
    return "" if rounds >= full else " (of its %s, to keep the run short)" % figure(full)


def sleepy_table(rows: list[dict]) -> str:
    """Per use case and mode: the test metric, wall time, bytes, staleness, lost updates."""
    header = [
        "use case",
        "service mode, fleet",
        "metric ± CI (units)",
        "async − rounds (paired, > 0 better)",
        "device updates / run",
        "steps / run",
        "wall s / run",
        "service bytes up / down per update",
        "device bytes sent / received per update",
        "staleness mean / max",
        "lost / accepted twice",
    ]
    body = []
    for r in rows:
        rounds = r["mode"] == "rounds"
        body.append(
            [
                r["use_case"],
                "rounds, always-on" if rounds else "async, sleepy",
                "%.4f ± %.4f (%s, %d)" % (r["mean"], r["ci95"], r["metric"], r["units"]),
                _paired(r["paired"]),
                "%.0f" % r["updates_per_run"],
                "%.0f" % r["steps_per_run"],
                "%.0f" % r["wall_s_per_run"],
                "%.0f / %.0f"
                % (r["service_bytes_up_per_update"], r["service_bytes_down_per_update"]),
                "%.0f / %.0f"
                % (r["device_bytes_sent_per_update"], r["device_bytes_received_per_update"]),
                "%.2f / %d" % (r["staleness_mean"], r["staleness_max"]),
                "%d / %d" % (r["lost"], r["accepted_twice"]),
            ]
        )
    return markdown_table(header, body)


def sleepy_fleet(doc: dict) -> str:
    """The table and how it was measured: compression, budget, settings."""
    settings = doc["async"]
    parts = []
    for use_case, budget in doc["budget"].items():
        s = settings[use_case]
        hours = [
            r["simulated_hours_per_run"]
            for r in doc["rows"]
            if r["mode"] == "async" and r["use_case"] == use_case
        ]
        parts.append(
            "%s: %d rounds%s × cohort = %d device updates a run; async B = %d, staleness power "
            "%g (%s); the simulated clock %s times the wall clock, so a %s s period is %s s of "
            "wall time; the async runs spanned %s simulated hours"
            % (
                use_case,
                doc["rounds"][use_case],
                _of_full(use_case, doc["rounds"][use_case]),
                budget,
                s["buffer"],
                s["staleness_power"],
                "chosen on validation devices"
                if s["from"] == "async-fleet.json"
                else "the defaults, no choice on validation devices recorded",
                figure(s["compression"]),
                figure(s["period_s"]),
                figure(s["period_s"] / s["compression"]),
                figure(sum(hours) / len(hours)) if hours else NONE,
            )
        )
    text = (
        "TinyMetaFed, seeds %s, new-device metric on test devices (%s protocol; mean and 95 %% "
        "CI over units, pooled over seeds as the bench pools). Each run has its own mosquitto "
        "at a free port and the real service: in rounds mode with the always-on simulated "
        "fleet, in async mode with the sleepy fleet (every training device wakes every period "
        "from its own phase, one real agent's training wake at a time in a pool of %d threads, "
        "its flash state and sensor ring in files; its ring holds the samples its sensor wakes "
        "took). Both at equal device updates: %s. Lost: an update a device sent that the "
        "service neither accepted, refused nor left unacknowledged in the device's flash at the "
        "end; an async step may hold more than B updates when they arrive together, so its "
        "device updates can exceed the budget."
        % (
            listed(doc["seeds"]),
            doc["protocol"],
            next(iter(settings.values()))["workers"],
            "; ".join(parts),
        )
    )
    return "\n\n".join([sleepy_table(doc["rows"]), text])


BLOCKS = [
    Block(
        "sleepy_fleet",
        "Sleepy devices over mosquitto against invited rounds",
        ("sleepy-fleet.json",),
        sleepy_fleet,
    )
]
