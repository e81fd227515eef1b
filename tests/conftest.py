"""Shared pytest fixtures: where the real data sets live.

The data is never part of the repository (brief section 3): tests read it from the folder named
by the environment variable TINYMETAFED_DATA, or else from `../shared/data` next to the
repository root, which CI and every developer machine have.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "TINYMETAFED_DATA"


def resolve_data_dir() -> Path:
    """Return $TINYMETAFED_DATA if set, else `<repo root>/../shared/data`."""
    configured = os.environ.get(DATA_ENV)
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder; fails (never skips) when it is missing, so CI cannot pass vacuously."""
    path = resolve_data_dir()
    if not path.is_dir():
        pytest.fail(
            f"data folder {path} does not exist: set {DATA_ENV} to the folder holding "
            "omniglot/, fsdd/ and occupancy/, or provide ../shared/data next to the repository",
            pytrace=False,
        )
    return path


@pytest.fixture
def mosquitto(tmp_path):
    """A real mosquitto on 127.0.0.1 at a free port, for one test."""
    from broker_service.testing.brokers import Mosquitto

    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()


def load_make_docs(figures: Path, monkeypatch):
    """benchmarks/make_docs.py as a module, drawing its plots into `figures` (not the committed
    ones)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_docs", REPO_ROOT / "benchmarks/make_docs.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "FIGURES", figures)
    return module
