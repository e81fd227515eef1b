"""The verdicts of the results page, from the bench's documents (bench-<use case>.json): the
paper's claims one table each, the goals, the other baselines and the learning invariant.

Every figure and verdict is read from the documents: `criteria` holds each claim's comparisons
(TinyMetaFed against TinyReptile, with the budget each holds at) and its verdict on all seeds
pooled, `per_seed_verdicts` the verdict of each seed alone.
"""

from __future__ import annotations

from broker_service.core.fewshot import MULTIPASS, ONLINE
from broker_service.core.strategies import ALGORITHMS
from broker_service.observe.tables import HONEST_COUNTS, markdown_table
from broker_service.sim import learning
from broker_service.sim.claims import paired_difference

from .common import NONE, Block, bench_files, count, fixed, times

CLAIMS = {
    "less_energy": "less energy",
    "less_communication": "less communication",
    "faster_convergence": "faster convergence",
    "more_stable": "more stable training",
    "better_few_shot": "better few-shot metric",
    "beats_no_federation": "better than no federation",
}
"""The paper's claims, as the bench's `criteria` keys them, and how the pages name them."""
BUDGETS = {
    "per device update": "per device update",
    "equal rounds": "equal rounds",
    "equal device updates": "equal device updates",
    "to the target": "to the validation target",
}
"""The budgets a comparison's basis ends with, and how the tables name them."""
QUANTITIES = {"less_energy": {"all": "energy", "fleet": "fleet energy"}}
"""What a claim's comparison measures where its basis names only the budget."""
MARKS = {True: "✓", False: "✗", None: "tie"}
BASELINES = ("reptile", "fedavg", "no_federation")
"""The other baselines TinyMetaFed is set against beside TinyReptile."""


def split_basis(basis: str) -> tuple[str, str]:
    """A comparison's basis as (what is compared, the budget it holds at)."""
    for suffix, budget in BUDGETS.items():
        if basis.endswith(suffix):
            return basis[: -len(suffix)].strip(" ,") or "all", budget
    return basis, "the same new devices"


def comparison_cell(c: dict) -> str:
    """One comparison: the paired difference ± its CI, or the cost ratio, with its mark."""
    mark = MARKS[c["holds"]]
    if "difference" in c:
        return "%+.3f ± %.3f %s" % (c["difference"], c["ci95"], mark)
    if c.get("ratio") is not None:
        return "%s %s" % (times(c["ratio"]), mark)
    if c.get("tinymetafed") is None:
        return "TinyMetaFed not reached %s" % mark
    return "TinyReptile not reached %s" % mark


def seeds_agreeing(doc: dict, key: str) -> str:
    """The pooled verdict of a claim and how many single seeds reach the same one."""
    verdict = doc["criteria"][key]["verdict"]
    per_seed = [v.get(key) for v in doc.get("per_seed_verdicts", {}).values()]
    if not per_seed:
        return verdict
    same = sum(1 for v in per_seed if v == verdict)
    return "%s (%d/%d seeds)" % (verdict, same, len(per_seed))


def _comparisons(bench: dict, key: str) -> list[dict]:
    return bench["criteria"].get(key, {}).get("comparisons", [])


def _cell(bench: dict, key: str, basis: str) -> str:
    found = [c for c in _comparisons(bench, key) if c["basis"] == basis]
    return comparison_cell(found[0]) if found else NONE


def _verdict(bench: dict, key: str) -> str:
    return seeds_agreeing(bench, key) if key in bench["criteria"] else NONE


def claims_table(*benches: dict) -> str:
    """One row per claim, one column per use case: the verdict on all seeds pooled, and how
    many single seeds agree."""
    header = ["claim", *(b["use_case"] for b in benches)]
    rows = [[text, *(_verdict(b, key) for b in benches)] for key, text in CLAIMS.items()]
    return markdown_table(header, rows)


def claim_table(key: str, *benches: dict) -> str:
    """One claim: a row per comparison with the budget it holds at, a column per use case, and
    the verdict."""
    bases = dict.fromkeys(c["basis"] for b in benches for c in _comparisons(b, key))
    rows = []
    for basis in bases:
        what, budget = split_basis(basis)
        what = QUANTITIES.get(key, {}).get(what, what)
        rows.append([what, budget, *(_cell(b, key, basis) for b in benches)])
    rows.append(["**verdict**", "", *(_verdict(b, key) for b in benches)])
    return markdown_table(["compared", "budget", *(b["use_case"] for b in benches)], rows)


def claim_renderer(key: str):
    """The renderer of one claim's table."""

    def render(*benches: dict) -> str:
        return claim_table(key, *benches)

    render.__doc__ = "The comparisons and verdict of the claim '%s'." % CLAIMS[key]
    return render


FEDERATED = ("tinymetafed", "tinyreptile", "tinyreptile_equal_updates", "reptile", "fedavg")
"""The tuned federated runs of a bench (TinyReptile twice: equal rounds, equal device updates)."""
EQUAL_UPDATES = ("tinymetafed", "tinyreptile_equal_updates", "reptile", "fedavg")
"""The runs that spend the same device updates."""
GOALS = (
    "Goals: the least fleet energy to the target on 3 of 4 use cases; the best final metric at "
    "equal device updates on 3 of 4; omniglot's error at most 0.35 of no federation's; sine's "
    "MSE at most 0.5; upload at least 10× below TinyReptile's. Fleet energy to the target is "
    "read off the validation curve (mJ summed over the fleet's device updates until the first "
    "point at the target); error is the MSE, or 1 − accuracy."
)
ERROR_RATIO_GOALS = {"omniglot": 0.35}
"""Use cases whose error must end at most this share of no federation's."""
MSE_GOALS = {"sine": 0.5}
"""Use cases whose MSE must end at most this."""
UPLOAD_GOAL = 10.0
"""TinyReptile's upload per update over TinyMetaFed's, at least."""


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if metric == "mse" else a > b


def _least_energy(algos: dict) -> tuple[str, bool]:
    """Who reaches the target with the least fleet energy (and TinyMetaFed's own), and whether
    it is TinyMetaFed."""
    reached = {
        a: algos[a]["to_target"]["fleet_energy_mj"]
        for a in FEDERATED
        if a in algos and algos[a].get("to_target")
    }
    if not reached:
        return "none reached it", False
    least = min(reached, key=reached.get)
    ours = reached.get("tinymetafed")
    cell = "%s, %.3g J (%s)" % (
        least,
        reached[least] / 1e3,
        "%.3g J" % (ours / 1e3) if ours else "not reached",
    )
    return cell, least == "tinymetafed"


def _best_final(algos: dict, metric: str) -> tuple[str, bool]:
    """Who ends best at equal device updates (and TinyMetaFed's figure), and whether it is
    TinyMetaFed."""
    final = {a: algos[a]["final_metric"] for a in EQUAL_UPDATES if a in algos}
    winner = "tinymetafed"
    for a, v in final.items():
        if _better(metric, v, final[winner]):
            winner = a
    cell = "%s, %.4g (%.4g)" % (winner, final[winner], final["tinymetafed"])
    return cell, winner == "tinymetafed"


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def _error_goal(use_case: str, ours: float, ratio: float) -> str:
    """The error goal of a use case (a share of no federation's error, or an MSE), marked."""
    if use_case in ERROR_RATIO_GOALS:
        goal = ERROR_RATIO_GOALS[use_case]
        return "%.2f of no federation's, goal ≤ %g %s" % (ratio, goal, _mark(ratio <= goal))
    if use_case in MSE_GOALS:
        goal = MSE_GOALS[use_case]
        return "MSE %.4g, goal ≤ %g %s" % (ours, goal, _mark(ours <= goal))
    return NONE


def _goal_row(bench: dict) -> tuple[list[str], bool, bool]:
    """A use case's row of the goals table, whether TinyMetaFed has the least fleet energy to
    the target, and whether it ends best at equal device updates."""
    algos, metric = bench["algorithms"], bench["metric"]
    energy, energy_ok = _least_energy(algos)
    final, final_ok = _best_final(algos, metric)
    ours, nf = algos["tinymetafed"]["final_metric"], algos["no_federation"]["final_metric"]
    ratio = ours / nf if metric == "mse" else (1 - ours) / (1 - nf)
    upload = (
        algos["tinyreptile"]["bytes_up_per_update"] / algos["tinymetafed"]["bytes_up_per_update"]
    )
    row = [
        "%s (%s)" % (bench["use_case"], metric),
        "%s %s" % (energy, _mark(energy_ok)),
        "%s %s" % (final, _mark(final_ok)),
        "%.2f" % ratio,
        _error_goal(bench["use_case"], ours, ratio),
        "%.1f× %s" % (upload, _mark(upload >= UPLOAD_GOAL)),
    ]
    return row, energy_ok, final_ok


def goals_table(*benches: dict) -> str:
    """The goals per use case: who reaches the target with the least fleet energy, who ends best
    at equal device updates, TinyMetaFed's error against no federation's and its upload against
    TinyReptile's, each marked met or not, and how many use cases meet the first two."""
    header = [
        "use case",
        "least fleet energy to the target (TinyMetaFed's)",
        "best at equal device updates (TinyMetaFed's)",
        "TinyMetaFed's error / no federation's",
        "error goal",
        "upload per update, TinyReptile / TinyMetaFed",
    ]
    rows = [_goal_row(b) for b in benches]
    tally = (
        "TinyMetaFed has the least fleet energy to the target on %d of %d use cases and ends "
        "best at equal device updates on %d of %d."
        % (sum(r[1] for r in rows), len(rows), sum(r[2] for r in rows), len(rows))
    )
    return "\n\n".join([GOALS, markdown_table(header, [r[0] for r in rows]), tally])


BASELINE_NOTE = (
    "Reptile and FedAvg train the same K devices a round for the same rounds as TinyMetaFed "
    "(equal rounds and equal device updates; their devices run epochs over stored samples, so "
    "their energy per update is not equal); no federation adapts the same new devices from the "
    "untrained model. Paired differences are over the same units (> 0: TinyMetaFed better) ± "
    "their 95 % CI; a baseline's refused updates show whether its runs trained at all."
)


def _paired(doc: dict, other: str, key: str) -> str:
    diff = paired_difference(doc, "tinymetafed", other, key)
    if diff is None:
        return NONE
    lo, hi = diff["difference"] - diff["ci95"], diff["difference"] + diff["ci95"]
    word = "better" if lo > 0 else ("worse" if hi < 0 else "tie")
    return "%+.3f ± %.3f (%s)" % (diff["difference"], diff["ci95"], word)


def _energy_ratio(algos: dict, other: str) -> str:
    ours = algos["tinymetafed"]["energy_mj_per_update"]
    theirs = algos[other].get("energy_mj_per_update") or 0.0
    return times(theirs / ours) if theirs and ours else NONE


def _baseline_row(bench: dict, other: str) -> list[str]:
    algos = bench["algorithms"]
    return [
        "%s (%s)" % (bench["use_case"], bench["metric"]),
        other,
        "%.4f ± %.4f" % (algos[other]["final_metric"], algos[other]["final_metric_ci95"]),
        "%.4f" % algos["tinymetafed"]["final_metric"],
        _paired(bench, other, ONLINE),
        _paired(bench, other, MULTIPASS),
        _energy_ratio(algos, other),
        count(algos[other].get("refused_updates")),
    ]


def baselines_table(*benches: dict) -> str:
    """TinyMetaFed against Reptile, FedAvg and no federation on every use case: their test
    metric, the paired difference online and multi-pass, their energy per update, and their
    refused updates."""
    header = [
        "use case",
        "baseline",
        "its online metric",
        "TinyMetaFed's",
        "TinyMetaFed − it, online",
        "TinyMetaFed − it, multi-pass",
        "its mJ per update ÷ TinyMetaFed's",
        "its refused updates",
    ]
    rows = [
        _baseline_row(b, other) for b in benches for other in BASELINES if other in b["algorithms"]
    ]
    return BASELINE_NOTE + "\n\n" + markdown_table(header, rows)


def meta_trains(entry: str) -> bool:
    """Whether a bench entry runs a federated algorithm (`tinyreptile_equal_updates` runs
    TinyReptile; no federation meta-trains nothing)."""
    for name in sorted(ALGORITHMS, key=len, reverse=True):
        if entry == name or entry.startswith(name + "_"):
            return ALGORITHMS[name].federated
    return False


def _gain(first: float, last: float, higher: bool) -> str:
    value = learning.gain(first, last, higher)
    if higher:
        return "%+.1f points" % (100 * value)
    return "%.1f %% %s" % (abs(100 * value), "lower" if value >= 0 else "higher")


LEARNING_NOTE = (
    "Every federated run must learn: its validation metric at the end of meta-training beats its "
    "round-0 value by %g %% of it (an error) or %g points (an accuracy), and an honest run has "
    "no refused update and no refused round (broker_service/sim/learning.py). '–': the bench "
    "did not record the count." % (100 * learning.MIN_ERROR_GAIN, 100 * learning.MIN_ACCURACY_GAIN)
)


def _learning_row(bench: dict, name: str, entry: dict) -> list[str]:
    higher = bench["metric"] != "mse"
    first, last = entry["curve"][0]["metric"], entry["curve"][-1]["metric"]
    return [
        "%s (%s)" % (bench["use_case"], bench["metric"]),
        name,
        "%s → %s" % (fixed(first), fixed(last)),
        _gain(first, last, higher),
        "✓" if learning.learned(first, last, higher) else "✗",
        *(count(entry.get(k)) for k in HONEST_COUNTS),
    ]


def learning_table(*benches: dict) -> str:
    """Every federated entry's validation metric at round 0 and at the end, whether that is
    learning by the invariant's rule, and what the service's bounds refused, down-weighted or
    capped."""
    header = [
        "use case",
        "algorithm",
        "validation metric, round 0 → end",
        "gain",
        "learns",
        "refused updates",
        "refused rounds",
        "down-weighted",
        "capped rounds",
    ]
    rows = [
        _learning_row(b, name, a)
        for b in benches
        for name, a in b["algorithms"].items()
        if meta_trains(name) and len(a.get("curve") or []) >= 2
    ]
    return LEARNING_NOTE + "\n\n" + markdown_table(header, rows)


BLOCKS = [
    Block("claims", "The paper's claims, use case by use case", bench_files(), claims_table),
    *(
        Block("claim_" + key, "Claim: " + text, bench_files(), claim_renderer(key))
        for key, text in CLAIMS.items()
    ),
    Block("goals", "The goals (test devices)", bench_files(), goals_table),
    Block("baselines", "Against the other baselines", bench_files(), baselines_table),
    Block("learning", "Every algorithm learns", bench_files(), learning_table),
]
