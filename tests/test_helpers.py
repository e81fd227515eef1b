"""The helpers the tests and the benchmarks rely on: waiting returns what it waited for and fails
with the name of the event once its deadline has passed; a session stops all it started, the
last first, even when a stop fails."""

import pytest

from broker_service.testing.session import Session
from broker_service.testing.waiting import wait_for_text, wait_until


def test_wait_until_returns_the_first_true_value():
    values = iter([0, None, "", 7])
    assert wait_until(lambda: next(values), 5, "a value") == 7


def test_wait_until_names_the_event_it_timed_out_on():
    with pytest.raises(AssertionError, match=r"timed out after 0.05s waiting for the moon"):
        wait_until(lambda: False, 0.05, "the moon")


def test_wait_for_text_reads_a_file_that_appears(tmp_path):
    log = tmp_path / "a.log"
    with pytest.raises(AssertionError, match="'ready' in a.log"):
        wait_for_text(log, "ready", 0.05)  # no file yet
    log.write_text("event=ready\n")
    assert wait_for_text(log, "ready", 5) == "event=ready\n"


def test_wait_for_text_looks_only_past_what_the_log_held_before(tmp_path):
    log = tmp_path / "serve.log"
    log.write_text("event=started\n")
    with pytest.raises(AssertionError, match="'event=started' in serve.log"):
        wait_for_text(log, "event=started", 0.05, after=len(log.read_text()))
    log.write_text("event=started\nevent=started again\n")
    assert "again" in wait_for_text(log, "event=started", 5, after=len("event=started\n"))


def test_a_session_stops_everything_last_first_and_raises_the_first_failure(tmp_path):
    stopped = []

    def failing():
        stopped.append("failing")
        raise RuntimeError("could not stop")

    session = Session(tmp_path, 1)
    session.on_close(lambda: stopped.append("first"))
    session.on_close(failing)
    session.on_close(lambda: stopped.append("last"))
    with pytest.raises(RuntimeError, match="could not stop"):
        session.close()
    assert stopped == ["last", "failing", "first"]
    session.close()  # nothing left to stop
    assert stopped == ["last", "failing", "first"]
    assert session.config(rounds=2).broker == "mqtt://127.0.0.1:1"
    assert session.config().state_dir == str(tmp_path / "state")
