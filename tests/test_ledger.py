"""The round ledger's bookkeeping, without MQTT: acceptance, refusal, withdrawal, closing."""

from __future__ import annotations

import pytest

from broker_service.server.rounds import NOT_AN_ANSWER, Rejected, RoundLedger
from device_agent import codec, reasons

N = 16


def delta(round_no: int = 2, values: tuple[float, ...] = (0.5, -1.0)) -> bytes:
    """A valid sparse update for round `round_no` of a model of N parameters."""
    indices = list(range(len(values)))
    return bytes(codec.encode(codec.KIND_DELTA, N, indices, list(values), round_no, round_no, 10))


def ledger_of(*invited: str) -> RoundLedger:
    ledger = RoundLedger(2, 2, N)
    ledger.invite(list(invited))
    return ledger


def test_offer_accepts_once_and_counts_the_duplicate():
    ledger = ledger_of("a", "b")
    first = ledger.offer("a", delta())
    assert first is not None and first.payload_bytes == len(delta()) and first.nnz == 2
    assert ledger.offer("a", delta()) is None
    assert ledger.duplicates == 1 and ledger.waiting_for() == {"b"}
    assert ledger.bytes_up() == len(delta())


def test_reject_of_an_invited_device_settles_its_turn():
    ledger = ledger_of("a", "b")
    ledger.reject("a", reasons.BAD_SIGNATURE)
    ledger.reject("a", reasons.BAD_CHECKSUM)  # counted, but the first reason is the one kept
    assert ledger.rejected == {reasons.BAD_SIGNATURE: 1, reasons.BAD_CHECKSUM: 1}
    assert ledger.refused == {"a": reasons.BAD_SIGNATURE}
    assert ledger.waiting_for() == {"b"}


@pytest.mark.parametrize("reason", sorted(NOT_AN_ANSWER))
def test_rejections_that_are_no_answer_keep_the_device_awaited(reason):
    ledger = ledger_of("a")
    ledger.reject("a", reason)
    assert ledger.rejected == {reason: 1} and not ledger.refused
    assert ledger.waiting_for() == {"a"}


def test_reject_of_an_uninvited_device_is_only_counted():
    ledger = ledger_of("a")
    ledger.reject("stranger", reasons.NOT_IN_COHORT)
    assert ledger.rejected == {reasons.NOT_IN_COHORT: 1} and not ledger.refused
    assert ledger.invited == {"a"}


def test_withdraw_undoes_the_acceptance_and_a_resend_counts():
    ledger = ledger_of("a")
    ledger.offer("a", delta())
    entry = ledger.withdraw("a", reasons.STORAGE_ERROR)
    assert entry.device == "a" and not ledger.accepted and not ledger.updates()
    assert ledger.rejected == {reasons.STORAGE_ERROR: 1} and not ledger.refused
    assert ledger.waiting_for() == {"a"}
    assert ledger.offer("a", delta()) is not None and ledger.duplicates == 0
    with pytest.raises(KeyError):
        ledger.withdraw("b", reasons.STORAGE_ERROR)


def test_offer_rejections_change_nothing():
    ledger = ledger_of("a")
    for payload, reason in (
        (delta(round_no=1), reasons.LATE),
        (delta(round_no=3), reasons.WRONG_ROUND),
        (b"junk", reasons.TRUNCATED),
    ):
        with pytest.raises(Rejected) as caught:
            ledger.offer("a", payload)
        assert caught.value.reason == reason
    with pytest.raises(Rejected) as caught:
        ledger.offer("b", delta())
    assert caught.value.reason == reasons.NOT_IN_COHORT
    assert not ledger.accepted and not ledger.rejected and not ledger.refused


def test_norm_bound():
    ledger = ledger_of("a", "b")
    ledger.max_norm = 2.0
    with pytest.raises(Rejected) as caught:
        ledger.offer("a", delta(values=(3.0, 0.0)))
    assert caught.value.reason == reasons.NORM_BOUND
    assert ledger.offer("b", delta(values=(1.0, 1.0))) is not None


def test_restore_counts_a_journaled_update_of_an_earlier_run():
    ledger = RoundLedger(2, 2, N)
    assert ledger.restore("a", delta()) is not None
    assert ledger.invited == {"a"} and ledger.attempts == 0 and set(ledger.accepted) == {"a"}


def test_close_returns_the_late_and_refuses_later_updates():
    ledger = ledger_of("c", "a", "b")
    ledger.offer("b", delta())
    ledger.reject("c", reasons.BAD_VALUES)
    assert ledger.close() == ["a"]
    with pytest.raises(Rejected) as caught:
        ledger.offer("a", delta())
    assert caught.value.reason == reasons.LATE


def test_quorum_counts_against_the_last_cohort():
    ledger = ledger_of("a", "b", "c", "d", "e")
    ledger.offer("a", delta())
    ledger.offer("b", delta())
    assert not ledger.quorum_met(0.6, 1)
    ledger.offer("c", delta())
    assert ledger.quorum_met(0.6, 1) and not ledger.quorum_met(0.6, 4)


def test_has_waiting_agrees_with_waiting_for():
    ledger = ledger_of("a", "b", "c")
    assert ledger.has_waiting()
    ledger.offer("a", delta())
    ledger.reject("a", reasons.BAD_CHECKSUM)  # answered and refused: counted in both
    ledger.reject("b", reasons.BAD_CHECKSUM)
    assert ledger.has_waiting() and ledger.waiting_for() == {"c"}
    ledger.offer("c", delta())
    assert not ledger.has_waiting() and ledger.waiting_for() == set()


def test_an_update_with_more_entries_than_the_round_keeps_is_refused():
    ledger = RoundLedger(2, 2, N, max_entries=2)
    ledger.invite(["a", "b"])
    with pytest.raises(Rejected) as refused:
        ledger.offer("a", delta(values=(0.5, -1.0, 0.25)))
    assert refused.value.reason == reasons.OVER_BUDGET
    assert "3 entries" in refused.value.detail and not ledger.accepted
    assert ledger.offer("b", delta()) is not None  # two entries: what the round keeps
