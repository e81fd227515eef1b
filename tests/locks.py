"""Test helpers for the state lock: another process that holds it, and who the lock file names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from broker_service.server.statelock import StateLock
from broker_service.testing.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]

HOLD = (
    "import sys\n"
    "from broker_service.server.statelock import StateLock\n"
    "lock = StateLock(sys.argv[1]).acquire()\n"
    "sys.stdin.read()\n"
)


def holder_pid(state: Path) -> int | None:
    """The pid the state's lock file names (its holder while the lock is held), or None."""
    holder = StateLock(state).holder()
    return holder.pid if holder else None


def hold_lock_in_child(state: Path) -> subprocess.Popen:
    """A Python process holding the state lock of `state` until it is killed; returned once
    it holds it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state)], cwd=ROOT, env=env, stdin=subprocess.PIPE
    )
    wait_until(lambda: holder_pid(state) == proc.pid, 30, "the child process to hold the lock")
    return proc


def kill_hard(proc: subprocess.Popen) -> None:
    """kill -9, and reap it."""
    proc.kill()
    proc.wait(10)
