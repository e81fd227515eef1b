"""One service per state directory: the lock, its holder's record, and `tinymetafed serve`
refusing a second service on the same state (one line naming the holder, exit code 2)."""

import errno
import fcntl
import gc
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from broker_service.server.config import ConfigError
from broker_service.server.statelock import (
    LOCK_FILE,
    Holder,
    StateLock,
    StateLocked,
    describe,
    parse_holder,
)
from broker_service.testing.waiting import wait_until
from tests.locks import ROOT, hold_lock_in_child, holder_pid, kill_hard


def test_the_lock_records_its_holder_and_refuses_a_second_one(tmp_path):
    lock = StateLock(tmp_path / "state").acquire()
    holder = lock.holder()
    assert holder is not None and lock.held
    assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
    since = datetime.fromisoformat(holder.since)
    assert abs(datetime.now(UTC) - since) < timedelta(minutes=1)
    second = StateLock(tmp_path / "state")
    assert not second.try_acquire() and not second.held  # flock: even in the same process
    with pytest.raises(StateLocked) as refused:
        second.acquire()
    message = str(refused.value)
    assert isinstance(refused.value, ConfigError) and "\n" not in message
    assert "host %s, pid %d, since %s" % (holder.host, holder.pid, holder.since) in message
    lock.release()
    assert not lock.held and second.try_acquire()
    lock.release()  # releasing a lock not held does nothing
    assert not StateLock(tmp_path / "state").try_acquire()


def test_a_dropped_lock_object_frees_the_lock(tmp_path):
    StateLock(tmp_path).acquire()  # not kept: the file is closed with it
    gc.collect()
    assert StateLock(tmp_path).try_acquire()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    child = hold_lock_in_child(tmp_path)
    try:
        with pytest.raises(StateLocked, match="pid %d," % child.pid):
            StateLock(tmp_path).acquire()
    finally:
        kill_hard(child)
    lock = StateLock(tmp_path).acquire()  # the kernel dropped the dead holder's lock
    assert holder_pid(tmp_path) == os.getpid() and lock.held


def test_the_holder_record_is_read_safely(tmp_path):
    me = Holder("box", 12, "2024-05-01T10:00:00+00:00")
    assert parse_holder(me.to_bytes().decode()) == me
    for text in ("", "{", "[]", '{"host": "box"}', '{"host": "b", "pid": "x", "since": "t"}'):
        assert parse_holder(text) is None, text
    assert describe(None) == "a holder that has not written its name yet"
    (tmp_path / LOCK_FILE).write_bytes(b"\xff\xfe")
    assert StateLock(tmp_path).holder() is None


def test_a_filesystem_without_locks_is_a_config_error(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(ConfigError, match="the filesystem gives no file locks"):
        StateLock(tmp_path).acquire()


def test_a_second_serve_on_the_same_state_refuses_and_a_killed_one_leaves_no_lock(
    session, tmp_path
):
    state = tmp_path / "state"
    # no devices: it waits for them
    first = session.serve(log=tmp_path / "first.log", ready="event=started")
    wait_until(lambda: holder_pid(state) == first.pid, 60, "the first service's lock")
    second = subprocess.run(
        [sys.executable, "-m", "broker_service.cli", "serve", "--state-dir", str(state)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2 and second.stdout == ""
    lines = second.stderr.splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("tinymetafed serve: error: state_dir %s is in use" % state)
    assert "(host %s, pid %d, since " % (socket.gethostname(), first.pid) in lines[0]
    assert first.poll() is None  # the first one runs on
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    third = session.serve(log=tmp_path / "third.log", ready="event=started")
    wait_until(lambda: holder_pid(state) == third.pid, 60, "the new service's lock")
    assert "error" not in (tmp_path / "third.log").read_text()
