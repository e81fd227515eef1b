"""The bench's plan: which runs it makes of which use case, seed and fold, with which settings.

An entry is one run of an algorithm (TinyReptile also at K times the rounds, TinyMetaFed's
error-feedback ablation on request); a job is one entry on one seed and fold with its full
settings, the tuned ones (broker_service.sim.tuning) and an ablation's overrides over them. Kept
apart from running the jobs (bench_run) so that a benchmark script can plan its own variants and
hand them to the same worker pool.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from broker_service.core.hyperparams import TUNED
from broker_service.core.settings import FIELDS, REMOVED, removed_setting
from broker_service.sim import tuning
from broker_service.sim.claims import EQUAL_UPDATES
from broker_service.usecases.registry import USE_CASES, use_case_class

ORDER = ["tinymetafed", "tinyreptile", "reptile", "fedavg", "no_federation"]
"""The algorithms the bench runs by default, in the tables' order."""


@dataclass(frozen=True)
class Entry:
    """One run of the bench: an algorithm, how many times the use case's rounds it gets, and
    settings it changes over the tuned ones (an ablation). With a `schedule` (the fields of
    sim.buffered.AsyncSchedule as (name, value) pairs) it runs asynchronously, its aggregation
    steps as many as give the invited rounds' device updates (rounds · cohort / buffer)."""

    name: str
    algorithm: str
    rounds_factor: int = 1
    overrides: tuple = ()
    schedule: tuple = ()


ABLATIONS = (Entry("tinymetafed_no_ef", "tinymetafed", overrides=(("error_feedback", False),)),)
"""TinyMetaFed's error-feedback ablation (`--ablations`): error feedback off. Same rounds and
cohort as TinyMetaFed, so equal rounds are equal device updates; the rates are TinyMetaFed's
tuned ones."""


@dataclass(frozen=True)
class Job:
    """One entry on one seed and fold, with its full settings."""

    use_case: str
    data_dir: str | None
    seed: int
    fold: int
    entry: Entry
    settings: dict
    checkpoint: str | None = None  # the file to save the final model to
    verbose: bool = False


def sweep_parser(doc: str | None) -> argparse.ArgumentParser:
    """The command line every multi-seed benchmark script shares (`--use-cases`, `--seeds`,
    `--data-dir`, `--workers`), its description `doc`; each script adds its own options."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--use-cases", default="sine,omniglot,kws,occupancy")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data-dir", default=os.environ.get("TINYMETAFED_DATA"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return parser


def known_use_cases() -> list[str]:
    """The use cases the bench runs, in the docs' order."""
    return [u for u in ("sine", "omniglot", "kws", "occupancy") if u in USE_CASES]


def entries(
    names: list[str], cohort: int, ablations: bool = False, extra: tuple = ()
) -> list[Entry]:
    """The runs for the chosen algorithms: TinyReptile also at K times the rounds (K > 1), with
    `ablations` TinyMetaFed's error-feedback ablation (ABLATIONS) too, and the `extra` entries
    a benchmark plans itself."""
    out = []
    for name in names:
        out.append(Entry(name, name))
        if name == "tinyreptile" and cohort > 1:
            out.append(Entry(EQUAL_UPDATES, name, cohort))
        if name == "tinymetafed" and ablations:
            out.extend(ABLATIONS)
    out.extend(extra)
    return out


def check_overrides(overrides: dict) -> None:
    """ValueError for a bench override that is not a known protocol setting: a removed setting
    (or a removed value of one, core.settings.REMOVED), a key that is no TrainingSettings
    field, or a tuned key (those come from the tuned files)."""
    known = set(FIELDS)
    for key in sorted(overrides):
        if key in REMOVED:
            raise ValueError("%s is a removed setting" % key)
        if removed_setting(key, overrides[key]) is not None:
            raise ValueError("%s is a removed setting value" % removed_setting(key, overrides[key]))
        if key in TUNED:
            raise ValueError("%s is tuned per algorithm (benchmarks/tune.py), not set" % key)
        if key not in known:
            raise ValueError("unknown setting %r; known: %s" % (key, ", ".join(sorted(known))))


def checkpoint_file(folder: str, use_case: str, entry: str, seed_fold: tuple | None) -> str:
    """<use case>-<entry>.ckpt.json, with -seed<s>-fold<f> when the bench runs several."""
    name = "%s-%s" % (use_case, entry)
    if seed_fold is not None:
        name += "-seed%d-fold%d" % seed_fold
    return str(Path(folder) / ("%s.ckpt.json" % name))


def plan_jobs(
    use_case_name: str,
    data_dir: str | None,
    seeds: list[int],
    settings: dict,
    tuned: dict | None,
    names: list[str],
    checkpoint_dir: str | None = None,
    verbose: bool = False,
    ablations: bool = False,
    extra: tuple = (),
) -> list[Job]:
    """Every (seed, fold, entry) job of one use case, each with its tuned settings (and an
    ablation's overrides over them); `extra`: entries of the caller's own (entries)."""
    folds = use_case_class(use_case_name).FOLDS
    several = len(seeds) > 1 or folds > 1
    jobs = []
    for seed in seeds:
        for fold in range(folds):
            for entry in entries(names, int(settings["cohort"]), ablations, extra):
                own = job_settings(settings, tuned, entry, fold)
                ckpt = None
                if checkpoint_dir:
                    where = (seed, fold) if several else None
                    ckpt = checkpoint_file(checkpoint_dir, use_case_name, entry.name, where)
                jobs.append(Job(use_case_name, data_dir, seed, fold, entry, own, ckpt, verbose))
    return jobs


def job_settings(settings: dict, tuned: dict | None, entry: Entry, fold: int) -> dict:
    """One entry's full settings on one fold: the protocol's, its algorithm's tuned values over
    them, its ablation's overrides over those, and its share of the rounds."""
    own = dict(settings, **tuning.tuned_overrides(tuned, entry.algorithm, fold))
    own.update(entry.overrides)
    own["rounds"] = int(settings["rounds"]) * entry.rounds_factor
    buffer = dict(entry.schedule).get("buffer")
    if buffer:  # asynchronous: as many device updates as the invited rounds
        own["rounds"] = max(1, own["rounds"] * int(own["cohort"]) // int(buffer))
    return own
