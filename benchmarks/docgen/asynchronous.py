"""Devices that sleep, learning asynchronously, against invited rounds at equal device updates
(benchmarks/async_fleet.py): the settings tried on validation devices, the one chosen, and the
comparison on test devices."""

from __future__ import annotations

from broker_service.observe.tables import markdown_table

from .common import NONE, Block, figure


def _paired(p: dict | None) -> str:
    return NONE if not p else "%+.4f ± %.4f" % (p["difference"], p["ci95"])


def comparison_table(rows: list[dict]) -> str:
    """The invited rounds against the chosen asynchronous run, per use case."""
    header = [
        "use case",
        "run",
        "metric ± CI",
        "vs rounds (paired, > 0 better)",
        "device updates",
        "steps",
        "staleness mean / max",
        "refused too stale",
        "simulated hours",
    ]
    body = []
    for r in rows:
        a = r["asynchronous"]
        body.append(
            [
                r["use_case"],
                "invited rounds" if not a else "asynchronous, B = %d" % r["buffer"],
                "%.4f ± %.4f (%s)" % (r["final_metric"], r["ci95"], r["metric"]),
                _paired(r["paired_vs_rounds"]),
                "%d" % r["updates"],
                "%d" % r["steps"],
                NONE if not a else "%.2f / %.1f" % (a["mean"], a["max"]),
                NONE if not a else "%d" % a["too_stale"],
                NONE if not a else figure(a["simulated_hours"]),
            ]
        )
    return markdown_table(header, body)


def choice_table(doc: dict) -> str:
    """Every setting tried on validation devices and where its learning curve ended."""
    body = []
    for use_case, rows in doc["choices"].items():
        chosen = doc["chosen"][use_case]
        for r in rows:
            pick = (r["buffer"], r["staleness_power"]) == (
                chosen["buffer"],
                chosen["staleness_power"],
            )
            body.append(
                [
                    use_case,
                    "%d" % r["buffer"],
                    "%g" % r["staleness_power"],
                    "%.4f" % r["validation"] + (" (chosen)" if pick else ""),
                ]
            )
    return markdown_table(["use case", "buffer B", "staleness power", "validation metric"], body)


def async_fleet(doc: dict) -> str:
    """The comparison, how it was run, and the choice made on validation devices."""
    arrival = ", ".join("%s %.1f s" % (u, s) for u, s in doc["round_s"].items())
    return "\n\n".join(
        [
            comparison_table(doc["rows"]),
            "TinyMetaFed, seeds %s, test devices. Both runs make the same device updates (the "
            "asynchronous one takes rounds · cohort / B steps, counting its updates still in "
            "flight at the end). Asynchronous: every training device wakes every %s s from its "
            "own phase; an update reaches the service as long after its wake as the energy "
            "model's training wake takes on the %s board with the %s kernels up to its uplink "
            "(%s); updates more than %d versions behind are refused. The buffer B and the "
            "staleness power were chosen on validation devices (seed %d):"
            % (
                ", ".join(str(s) for s in doc["seeds"]),
                figure(doc["period_s"]),
                doc["board"],
                doc["kernel"],
                arrival,
                doc["max_staleness"],
                doc["seeds"][0],
            ),
            choice_table(doc) + untried_note(doc),
            reading(doc),
        ]
    )


def _verdict(paired: dict) -> str:
    """Better, worse or within noise, by the paired difference's CI (> 0 better)."""
    low, high = paired["difference"] - paired["ci95"], paired["difference"] + paired["ci95"]
    return "better" if low > 0 else "worse" if high < 0 else "within noise"


def reading(doc: dict) -> str:
    """What the comparison says per use case, from the rows: the chosen asynchronous run and
    the one at the rounds' number of steps against the invited rounds, a run that is the
    rounds' computation exactly, and powers that tie because B = 1."""
    lines = []
    for use_case in doc["chosen"]:
        mine = [r for r in doc["rows"] if r["use_case"] == use_case and r["asynchronous"]]
        rounds = next(r for r in doc["rows"] if r["use_case"] == use_case and not r["buffer"])
        for r in mine:
            p = r["paired_vs_rounds"]
            if not p:
                continue
            steps = (
                "the rounds' steps"
                if r["steps"] == rounds["steps"]
                else "%.3g times the rounds' steps" % (r["steps"] / rounds["steps"])
            )
            if p["difference"] == 0 and p["ci95"] == 0 and r["asynchronous"]["max"] == 0:
                lines.append(
                    "- %s at B = %d is the invited rounds' computation exactly: every training "
                    "device answers every version with no staleness, so each step is a round's "
                    "aggregate (the two simulations agree to the last digit)."
                    % (use_case, r["buffer"])
                )
                continue
            lines.append(
                "- %s at B = %d (%s, equal device updates): %s (%+.4f ± %.4f)."
                % (use_case, r["buffer"], steps, _verdict(p), p["difference"], p["ci95"])
            )
        tied = [c for c in doc["choices"][use_case] if c["buffer"] == 1]
        if len(tied) > 1 and len({c["validation"] for c in tied}) == 1:
            lines.append(
                "- %s at B = 1: the staleness weight cancels (a weighted mean of one update), "
                "so every power gives the same run and the first tried is recorded." % use_case
            )
    return "Read per use case (paired differences against the invited rounds):\n\n" + "\n".join(
        lines
    )


def untried_note(doc: dict) -> str:
    """The buffer sizes left out because the use case's training devices could not fill them."""
    parts = [
        "%s B = %s" % (u, ", ".join(str(b) for b in sizes))
        for u, sizes in doc.get("untried_buffers", {}).items()
        if sizes
    ]
    timed_out = [
        r["asynchronous"]["timeout_steps"]
        for r in doc["rows"]
        if (r.get("asynchronous") or {}).get("timeout_steps") is not None
    ]
    timeouts = doc.get("step_timeout_s") or {}
    deadline = (
        "A step open for as long as a device can take to answer a new version (a wake period, "
        "its 10 %% jitter and the arrival time: %s) is taken with what it holds, as the "
        "service's `step_timeout` does: %g steps a run so taken (mean over seeds, the most of "
        "any asynchronous entry compared)."
        % (", ".join("%s %s s" % (u, figure(t)) for u, t in timeouts.items()), max(timed_out))
        if timed_out and isinstance(timeouts, dict)
        else ""
    )
    if not parts:
        return "\n\n" + deadline if deadline else ""
    return (
        "\n\nNot tried: %s, larger than the use case's training devices (one update a "
        "device a version could not fill the buffer). %s" % ("; ".join(parts), deadline)
    )


BLOCKS = [
    Block(
        "async_fleet",
        "Devices that sleep: asynchronous against invited rounds",
        ("async-fleet.json",),
        async_fleet,
    )
]
