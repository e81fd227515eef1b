"""Shared pytest fixtures: where the real data sets live, and a session on a real mosquitto (the
broker, and the service and agents a test starts on it: broker_service.testing.session).

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
def session(tmp_path):
    """A real mosquitto on 127.0.0.1 at a free port for one test, with the service, fleets and
    agents the test starts on it (broker_service.testing.session), all stopped at its end."""
    from broker_service.testing.session import Session

    with Session.with_mosquitto(tmp_path) as started:
        yield started


@pytest.fixture
def mosquitto(session):
    """The session's mosquitto, for a test that needs the broker alone."""
    return session.broker


def load_make_docs(figures: Path, monkeypatch):
    """benchmarks.make_docs, drawing its plots into `figures` (not the committed ones)."""
    from benchmarks import make_docs

    monkeypatch.setattr(make_docs, "FIGURES", figures)
    return make_docs
