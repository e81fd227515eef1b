"""The bookkeeping of asynchronous sessions (server/steps.py), free of I/O: staleness weights,
refusals, repeats, receipts, the step trigger, and the admission of a buffer's updates."""

import numpy as np
import pytest

from broker_service.core.aggregate import sparse_weighted_mean
from broker_service.server.admission import Admission
from broker_service.server.journal import Journal
from broker_service.server.rounds import Rejected
from broker_service.server.steps import (
    AcceptedPairs,
    Receipts,
    Refused,
    StepBuffer,
    staleness_weight,
    step_due,
)
from device_agent import codec, reasons

N = 16


def update(version, values=(0.1, -0.2), samples=10, round_no=None, n=N, kind=codec.KIND_DELTA):
    """A sparse DELTA computed on `version` (its round is its version unless told)."""
    indices = list(range(len(values)))
    return bytes(
        codec.encode(
            kind,
            n,
            indices,
            list(values),
            model_version=version,
            round_no=version if round_no is None else round_no,
            samples=samples,
        )
    )


def buffer(step=5, max_staleness=3, power=0.5, seen=None, **kw):
    return StepBuffer(step, N, seen or AcceptedPairs(), max_staleness, power, **kw)


def test_staleness_weights_follow_the_polynomial_discount():
    assert staleness_weight(0, 0.5) == 1.0
    assert staleness_weight(3, 0.5) == pytest.approx(0.5)
    assert staleness_weight(1, 1.0) == pytest.approx(0.5)
    assert staleness_weight(7, 0.0) == 1.0
    weights = [staleness_weight(s, 0.5) for s in range(6)]
    assert weights == sorted(weights, reverse=True)


def test_an_update_counts_with_its_staleness_weight_times_its_samples():
    b = buffer(step=5)
    fresh = b.offer("a", update(5, values=(1.0, 1.0)))
    stale = b.offer("b", update(2, values=(-1.0, -1.0)))  # s = 3: weight 1/2
    assert fresh.update.weight == 1.0 and stale.update.weight == pytest.approx(0.5)
    assert (fresh.round, stale.round) == (5, 2)
    mean = sparse_weighted_mean(N, b.updates())
    assert mean[0] == pytest.approx((1.0 - 0.5) / 1.5)
    assert b.devices() == ["a", "b"] and b.mean_staleness() == pytest.approx(1.5)


def test_a_future_version_is_refused_and_may_come_again():
    b = buffer(step=5)
    with pytest.raises(Rejected) as info:
        b.offer("a", update(6))
    assert info.value.reason == reasons.WRONG_ROUND and not isinstance(info.value, Refused)
    assert not b.accepted


def test_too_stale_and_malformed_updates_are_refused_for_good_with_their_version():
    b = buffer(step=5, max_staleness=3)
    cases = [
        (update(1), reasons.TOO_STALE, 1),
        (update(4, round_no=3), reasons.WRONG_ROUND, 4),
        (update(4, n=N + 1), reasons.SHAPE_MISMATCH, 4),
        (update(4, kind=codec.KIND_MODEL), reasons.BAD_KIND, 4),
    ]
    for payload, reason, version in cases:
        with pytest.raises(Refused) as info:
            b.offer("a", payload)
        assert (info.value.reason, info.value.version) == (reason, version)
    assert b.offer("a", update(2)) is not None  # s = 3 = max_staleness still counts
    with pytest.raises(Rejected) as bad:  # unreadable: its version is unknown
        b.offer("a", b"garbage")
    assert not isinstance(bad.value, Refused)


def test_over_budget_and_norm_bound_are_refused_for_good():
    b = buffer(max_entries=1)
    with pytest.raises(Refused, match="over_budget"):
        b.offer("a", update(5))
    b = buffer(max_norm=0.1)
    with pytest.raises(Refused, match="norm_bound"):
        b.offer("a", update(5, values=(1.0, 1.0)))


def test_a_repeat_of_a_device_and_version_counts_once_across_steps():
    seen = AcceptedPairs()
    first = buffer(step=5, seen=seen)
    assert first.offer("a", update(5)) is not None
    assert first.offer("a", update(5, values=(0.3, 0.3))) is None  # another copy of (a, 5)
    assert first.duplicates == 1
    assert first.offer("a", update(4)) is not None  # another version counts
    seen.prune(6, 3)
    second = buffer(step=6, seen=seen)
    assert second.offer("a", update(5)) is None  # accepted in the step before
    assert second.offer("b", update(5)) is not None
    seen.prune(9, 3)  # versions below 6 fall out of the window: too stale by then
    assert seen.to_list() == []


def test_withdraw_undoes_the_newest_acceptance_of_a_device():
    b = buffer()
    b.offer("a", update(4))
    b.offer("a", update(5))
    entry = b.withdraw("a", reasons.STORAGE_ERROR)
    assert entry.round == 5 and ("a", 5) not in b.seen and ("a", 4) in b.seen
    assert b.rejected[reasons.STORAGE_ERROR] == 1 and b.offer("a", update(5)) is not None
    with pytest.raises(StopIteration):
        b.withdraw("nobody", reasons.STORAGE_ERROR)


def test_receipts_only_move_forward_and_round_trip():
    r = Receipts()
    assert r.fields("a") == {}
    assert r.record("a", 3) and not r.record("a", 2) and not r.record("a", 3, reasons.TOO_STALE)
    assert r.record("b", 1, reasons.TOO_STALE)
    assert r.fields("a") == {"receipt": 3}
    assert r.fields("b") == {"receipt": 1, "receipt_reason": reasons.TOO_STALE}
    assert Receipts.from_dict(r.to_dict()) == r
    damaged = {"a": [3, None], "b": "x", "c": [-1], "d": [True, None], "e": []}
    assert Receipts.from_dict(damaged).latest == {"a": (3, None)}
    pairs = AcceptedPairs({("a", 3), ("b", 4)})
    assert AcceptedPairs.from_list(pairs.to_list()) == pairs
    assert AcceptedPairs.from_list([["a", 1], ["b"], [2, 2], "x"]).pairs == {("a", 1)}
    assert AcceptedPairs.from_list(None).pairs == set()


@pytest.mark.parametrize(
    ("count", "elapsed", "due"),
    [(4, 0.0, True), (3, 0.0, False), (3, 10.0, True), (1, 10.0, False), (0, 99.0, False)],
)
def test_a_step_is_due_with_a_full_buffer_or_after_the_timeout_with_enough(count, elapsed, due):
    assert step_due(count, 4, elapsed, 10.0, 2) is due


def test_admission_journals_a_buffer_and_replay_restores_it(tmp_path):
    """The round's admission, unchanged, admits a step's updates and journals them; a restarted
    step replays the same updates with the same weights."""
    journal = Journal(tmp_path, 5)
    b = buffer(step=5)
    outcomes = Admission(None).admit_many(
        b, journal, [("a", update(5)), ("b", update(3)), ("a", update(5)), ("c", update(9))]
    )
    assert [type(o).__name__ for o in outcomes] == ["Accepted", "Accepted", "NoneType", "Rejected"]
    replayed = buffer(step=5)
    for device, payload in journal.replay():
        replayed.restore(device, payload)
    assert replayed.pairs() == b.pairs() == [("a", 5), ("b", 3)]
    for mine, theirs in zip(replayed.updates(), b.updates(), strict=True):
        assert mine.weight == theirs.weight
        np.testing.assert_array_equal(mine.values, theirs.values)


def test_a_checkpoint_resumes_only_in_its_own_mode():
    """A checkpoint without a mode is of invited rounds (those written before asynchronous
    sessions existed load as before); a service of the other mode refuses it, naming both."""
    from broker_service.server.checkpoint import Checkpoint, CheckpointError
    from broker_service.server.config import ServiceConfig
    from broker_service.server.resume import check_resumable

    theta = np.zeros(N, dtype=np.float32)
    rounds = Checkpoint({}, theta, 3, "tinymetafed", "sine")
    buffered = Checkpoint({}, theta, 3, "tinymetafed", "sine", extra={"mode": "async"})
    check_resumable(rounds, "c.json", ServiceConfig(), N)
    check_resumable(buffered, "c.json", ServiceConfig(mode="async"), N)
    with pytest.raises(CheckpointError, match="mode rounds; this service runs mode async"):
        check_resumable(rounds, "c.json", ServiceConfig(mode="async"), N)
    with pytest.raises(CheckpointError, match="mode async; this service runs mode rounds"):
        check_resumable(buffered, "c.json", ServiceConfig(), N)
