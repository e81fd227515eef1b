"""One entry point from a use-case name to a loaded UseCase, for the CLI, the harness and tests.

Use-case modules are imported lazily, so that asking for "sine" never imports Pillow or reads
any data.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

from broker_service.usecases.base import DataMissingError, UseCase

# name -> (module, class, what the data folder must hold; None for synthetic use cases)
USE_CASES: dict[str, tuple[str, str, str | None]] = {
    "sine": ("broker_service.usecases.sine", "SineUseCase", None),
    "omniglot": (
        "broker_service.usecases.omniglot",
        "OmniglotUseCase",
        "omniglot/images_background*.zip or omniglot/images_evaluation*.zip (or extracted)",
    ),
    "kws": (
        "broker_service.usecases.kws",
        "KwsUseCase",
        "fsdd/recordings/{digit}_{speaker}_{index}.wav",
    ),
    "occupancy": (
        "broker_service.usecases.occupancy",
        "OccupancyUseCase",
        "occupancy/{datatraining,datatest,datatest2}.txt",
    ),
}


def use_case_class(name: str) -> type[UseCase]:
    """The class of the named use case (imports its module, reads no data)."""
    if name not in USE_CASES:
        raise ValueError(f"unknown use case {name!r}; known: {', '.join(USE_CASES)}")
    module, cls_name, _ = USE_CASES[name]
    return getattr(import_module(module), cls_name)


def load_use_case(name: str, data_dir: str | Path | None, seed: int = 0, **kw: Any) -> UseCase:
    """Build the named use case ("sine", "omniglot", "kws" or "occupancy").

    `data_dir` is the folder holding the data sets (ignored by "sine"); extra keyword arguments go
    to the use case's constructor. Raises ValueError for an unknown name and DataMissingError,
    naming the use case, the expected file or folder and the data_dir, when the data is missing.
    """
    cls = use_case_class(name)
    expected = USE_CASES[name][2]
    if expected is None:
        return cls(seed=seed, **kw)
    if data_dir is None:
        raise DataMissingError(
            f"{name} use case: no data_dir given (pass --data-dir); expected {expected} under it"
        )
    return cls(data_dir, seed=seed, **kw)
