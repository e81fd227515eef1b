"""One service per state directory: an exclusive OS lock held for the service's whole life.

The lock is flock(2) on `<state_dir>/service.lock`, taken without waiting and held by keeping
the file open. The kernel drops it when the holder's process ends in any way (exit, crash,
kill -9), so a dead service never leaves a stale lock; on a network filesystem the server drops
it once the holder's lease lapses (NFSv4: 90 s by default). The file records who took the lock
last (host, pid, since), so a second service on the same state can say whose it is.

The lock file is never removed: a remover could delete the file another process has just locked,
and a third would then lock a new file of the same name.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from broker_service.server.config import ConfigError

LOCK_FILE = "service.lock"
"""The lock's file name in the state directory."""


@dataclass(frozen=True)
class Holder:
    """Who took a state lock: the machine's host name, the process id, when (ISO 8601, UTC)."""

    host: str
    pid: int
    since: str

    @classmethod
    def me(cls) -> Holder:
        """This process, now."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(socket.gethostname(), os.getpid(), now)

    def describe(self) -> str:
        """`host H, pid P, since T`: the holder as log lines and errors name it."""
        return "host %s, pid %d, since %s" % (self.host, self.pid, self.since)

    def to_bytes(self) -> bytes:
        """The lock file's content."""
        return (
            json.dumps({"host": self.host, "pid": self.pid, "since": self.since}) + "\n"
        ).encode()


def parse_holder(text: str) -> Holder | None:
    """The holder recorded in a lock file's text; None when it is empty or not one (a holder
    that has not written its name yet, or a damaged file)."""
    try:
        doc = json.loads(text)
        return Holder(str(doc["host"]), int(doc["pid"]), str(doc["since"]))
    except (ValueError, TypeError, KeyError):
        return None


def describe(holder: Holder | None) -> str:
    """A holder's description, or what to say when it is unknown."""
    return holder.describe() if holder else "a holder that has not written its name yet"


class StateLocked(ConfigError):
    """Another service holds the state directory: a user error (exit code 2) naming it."""


class StateLock:
    """The exclusive lock on a state directory. `try_acquire()` takes it if it is free,
    `acquire()` takes it or raises StateLocked, `release()` (or the process's end) frees it."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self.fd: int | None = None
        self._closer: weakref.finalize | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self.fd is not None

    def try_acquire(self) -> bool:
        """Take the lock without waiting and record this process as its holder; False when
        another open of the file (another service, in this process or elsewhere) holds it."""
        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise ConfigError(
                "state_dir %s: cannot lock %s (%s): the filesystem gives no file locks "
                "(docs/service.md, the shared state)" % (self.path.parent, self.path, exc.strerror)
            ) from None
        self.fd = fd
        self._closer = weakref.finalize(self, os.close, fd)  # a dropped lock object frees it
        self._record(Holder.me())
        return True

    def acquire(self) -> StateLock:
        """Take the lock, or raise StateLocked naming its holder; returns self."""
        if not self.try_acquire():
            raise StateLocked(
                "state_dir %s is in use by another service (%s); stop that one first, or run "
                "this one with --standby to take over when it is gone"
                % (self.path.parent, describe(self.holder()))
            )
        return self

    def _record(self, holder: Holder) -> None:
        """Write the holder into the locked file (durably: a standby elsewhere reads it)."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, holder.to_bytes(), 0)
        os.fsync(self.fd)

    def holder(self) -> Holder | None:
        """Who took the lock last, as the file records it (the holder while it is held)."""
        try:
            return parse_holder(self.path.read_text())
        except (OSError, UnicodeDecodeError):
            return None

    def release(self) -> None:
        """Free the lock (closing the file frees it); nothing when it is not held."""
        if self._closer is not None:
            self._closer()
        self.fd = None
        self._closer = None
