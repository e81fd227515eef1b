"""The use case a worker process loads once and keeps for its next jobs.

The bench's jobs (broker_service.sim.bench) and the tuning search's (broker_service.sim.tuning)
run in worker processes, many on the same use case, seed and fold; loading a real data set
takes seconds, so each worker keeps the last few it loaded. Both harnesses import this module,
neither the other.
"""

from __future__ import annotations

import functools

from broker_service.usecases.base import UseCase
from broker_service.usecases.registry import load_use_case, use_case_class


def use_case_options(name: str, settings: dict) -> tuple:
    """The settings that are options of the use case's constructor (its OPTIONS), as a
    hashable tuple of (key, value) for cached_use_case."""
    return tuple((k, settings[k]) for k in use_case_class(name).OPTIONS if k in settings)


@functools.lru_cache(maxsize=4)
def cached_use_case(
    name: str, data_dir: str | None, seed: int, fold: int, options: tuple = ()
) -> UseCase:
    """A worker's use case, loaded once per (name, seed, fold, options)."""
    extra = {"fold": fold} if use_case_class(name).FOLDS > 1 else {}
    return load_use_case(name, data_dir, seed=seed, **extra, **dict(options))
