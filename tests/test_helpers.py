"""The waiting helpers the tests rely on: they return what they waited for, and fail with the
name of the event once their deadline has passed."""

import pytest

from broker_service.testing.waiting import wait_until
from tests.helpers import wait_for_text


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
