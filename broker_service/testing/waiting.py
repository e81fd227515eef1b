"""Waiting for an event with a deadline (never sleep and hope), a line in a log among them, and a
service run in a thread to wait on: what the tests and the benchmarks that drive real brokers and
services share."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.01) -> T:
    """Poll `predicate` until it returns something true, and return that.

    Raises AssertionError("timed out after Ns waiting for <what>") once `timeout` seconds
    (monotonic clock) have passed; `what` names the event so a failure says what never happened.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %gs waiting for %s" % (timeout, what))
        time.sleep(interval)


def read_text(path: Path) -> str:
    """The file's text, or "" while it does not exist yet."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def wait_for_text(path: Path, text: str, timeout: float, after: int = 0) -> str:
    """Wait until the file (a log) contains `text` past its first `after` characters (what a
    log held before the event's writer started); returns the file's text then."""

    def containing() -> str:
        content = read_text(path)
        return content if text in content[after:] else ""

    return wait_until(containing, timeout, "%r in %s" % (text, path.name))


def run_in_background(service: Any) -> tuple[threading.Thread, dict]:
    """Start `service.run()` in a thread; the dict receives its summary when it ends."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(service.run()))
    thread.start()
    return thread, result
