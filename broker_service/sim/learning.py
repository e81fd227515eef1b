"""Every federated algorithm is seen to learn: the invariant a comparison rests on.

A flat learning curve is a harness bug until shown otherwise (the brief's evaluation
standards): an algorithm whose every update the service refuses keeps its initialisation, and
its "final" figure is only the untrained model adapted with its own rates. So a run *learns*
when its validation metric at the end of meta-training beats its round-0 value by at least
`MIN_ERROR_GAIN` of it (an error such as MSE) or `MIN_ACCURACY_GAIN` (an accuracy), and an
honest run refuses nothing: no update refused by the service's bounds, no round's step
refused.

`failures(doc)` checks a bench document (the committed JSON as the bench writes it);
`short_runs(...)` meta-trains every federated algorithm for a few rounds with the shipped
settings and checks the same (what `make test` runs).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from broker_service.core.strategies import ALGORITHMS

MIN_ERROR_GAIN = 0.05
"""An error metric must end at most (1 - this) × its round-0 value."""
MIN_ACCURACY_GAIN = 0.02
"""An accuracy must end at least this much (2 points) above its round-0 value."""
HONEST = ("refused_updates", "refused_rounds")
"""What an honest run must not have: updates or rounds' steps the service refused."""


def federated(names: Iterable[str], algorithm_of=None) -> list[str]:
    """The entries of `names` whose algorithm meta-trains (no federation does not)."""
    algorithm_of = algorithm_of or (lambda name: name)
    return [n for n in names if ALGORITHMS[algorithm_of(n)].federated]


def gain(first: float, last: float, higher_is_better: bool) -> float:
    """How far the metric moved the right way: points for an accuracy, a share of the round-0
    value for an error (negative when it got worse)."""
    if higher_is_better:
        return last - first
    return (first - last) / first if first else 0.0


def learned(first: float, last: float, higher_is_better: bool) -> bool:
    """Whether a curve from `first` to `last` shows learning by this module's rule."""
    if not (np.isfinite(first) and np.isfinite(last)):
        return False
    floor = MIN_ACCURACY_GAIN if higher_is_better else MIN_ERROR_GAIN
    return gain(first, last, higher_is_better) >= floor - 1e-9  # 0.42 - 0.40 is 0.0199...


def entry_failures(name: str, entry: dict, higher_is_better: bool) -> list[str]:
    """Why one entry of a bench document (its mean learning curve, its refusals per seed)
    breaks the invariant; [] when it learns and refused nothing."""
    out = []
    curve = entry.get("curve") or []
    if len(curve) < 2:
        out.append("%s: no learning curve" % name)
    else:
        first, last = float(curve[0]["metric"]), float(curve[-1]["metric"])
        if not learned(first, last, higher_is_better):
            out.append(
                "%s: validation metric %.4f at round 0, %.4f at round %d (%s)"
                % (name, first, last, curve[-1]["round"], _rule(higher_is_better))
            )
    seeds = entry.get("per_seed") or {"all": entry}
    for seed, figures in seeds.items():
        for key in HONEST:
            if key not in figures:
                out.append("%s seed %s: %s not recorded" % (name, seed, key))
            elif figures[key]:
                out.append("%s seed %s: %d %s" % (name, seed, figures[key], key))
    return out


def _rule(higher_is_better: bool) -> str:
    if higher_is_better:
        return "needs +%g points" % (100 * MIN_ACCURACY_GAIN)
    return "needs -%g %%" % (100 * MIN_ERROR_GAIN)


def failures(doc: dict) -> list[str]:
    """Every way a bench document breaks the invariant: a federated entry that did not learn or
    refused an honest update; [] when all learn."""
    higher = doc["metric"] != "mse"
    algos = doc["algorithms"]
    names = federated(algos, lambda n: _algorithm_of(n))
    return [
        "%s %s" % (doc["use_case"], line)
        for name in names
        for line in entry_failures(name, algos[name], higher)
    ]


def _algorithm_of(entry: str) -> str:
    """The algorithm a bench entry runs (`tinyreptile_equal_updates` runs TinyReptile; an
    ablation `tinymetafed_no_ef` runs TinyMetaFed)."""
    for name in sorted(ALGORITHMS, key=len, reverse=True):
        if entry == name or entry.startswith(name + "_"):
            return name
    raise KeyError("no algorithm for bench entry %r" % entry)


def short_runs(
    use_case_name: str,
    data_dir: str | None,
    rounds: int,
    eval_devices: int,
    seed: int = 0,
    fold: int = 0,
    algorithms: Iterable[str] | None = None,
) -> dict:
    """Meta-train every federated algorithm (or `algorithms`) for `rounds` rounds with the
    shipped settings (the tuned files' rates), measuring the validation metric at round 0 and
    at the end; returns {"use_case", "metric", "algorithms": {name: {"curve", "refused_..."}}}
    in a bench document's shape, so `failures` reads it."""
    from broker_service.core.hyperparams import settings_for
    from broker_service.core.streams import CURVE_EPISODES, named_stream
    from broker_service.sim import simulation, tuning
    from broker_service.sim.bench import cached_use_case, use_case_options
    from broker_service.usecases.base import VALIDATION

    base = settings_for(use_case_name, rounds=rounds, eval_every=rounds)
    base["eval_devices"] = eval_devices
    tuned = tuning.load_tuned(use_case_name)
    use_case = cached_use_case(
        use_case_name, data_dir, seed, fold, use_case_options(use_case_name, base)
    )
    episodes = use_case.new_device_episodes(
        eval_devices, named_stream(seed, CURVE_EPISODES), VALIDATION
    )
    out = {}
    for name in algorithms or federated(ALGORITHMS):
        settings = dict(base, **tuning.tuned_overrides(tuned, name, fold))
        result = simulation.run(ALGORITHMS[name](settings), use_case, settings, seed, episodes, [])
        summary = simulation.summarise(result, use_case)
        out[name] = {"curve": summary["curve"], **{k: summary[k] for k in HONEST}}
    return {"use_case": use_case_name, "metric": use_case.metric, "algorithms": out}
