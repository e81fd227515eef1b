"""Generated and mutated inputs never crash a decoder, the round ledger, the agent or the presence
view, and never change the model unless they are valid updates (a short run; benchmarks/fuzz.py
does 100,000+). Valid messages are accepted and corrupted ones rejected, and the targets
themselves fail on the bugs they exist to find."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_service.testing.fuzz_targets import (
    ACCEPTED,
    AGENT_COMMAND,
    COMMAND,
    DECODE,
    DELTA_F16,
    FLEET,
    REJECTED,
    SEEDS,
    TARGETS,
    VALID,
    Targets,
)
from device_agent import codec, reasons

SHARED = Targets()
WHICH = st.integers(0, len(TARGETS) - 1)


def _input(which: int, body: bytes) -> bytes:
    return bytes([which]) + body


def _name(case: tuple[int, bytes]) -> str:
    return "%s-%d" % (TARGETS[case[0]], len(case[1]))


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(WHICH, st.binary(max_size=300))
def test_random_bytes(which, body):
    assert SHARED.run(_input(which, body)) in (ACCEPTED, REJECTED)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    WHICH,
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6),
    st.integers(0, 2000),
)
def test_mutated_valid_messages(which, seed, flips, cut):
    data = bytearray(seed)
    for pos, value in flips:
        data[pos % len(data)] = value
    assert SHARED.run(_input(which, bytes(data[: max(cut, 1)]))) in (ACCEPTED, REJECTED)


@pytest.mark.parametrize("case", VALID, ids=_name)
def test_valid_seeds_are_accepted(case):
    which, seed = case
    targets = Targets()
    assert targets.run(_input(which, seed)) == ACCEPTED, targets.reason


@pytest.mark.parametrize("case", VALID, ids=_name)
def test_corrupted_seeds_are_rejected(case):
    which, seed = case
    targets = Targets()
    assert targets.run(_input(which, seed[:-1])) == REJECTED  # the last byte lost
    if which != FLEET:  # a status is JSON without a checksum: only a cut makes it unreadable
        flipped = seed[:-1] + bytes([seed[-1] ^ 0x01])
        assert targets.run(_input(which, flipped)) == REJECTED
        assert targets.reason == reasons.BAD_CHECKSUM


def test_an_internal_error_in_the_agent_fails_its_target():
    targets = Targets()

    def broken(payload):
        raise IndexError("a bug in the command handler")

    targets.agent._on_command = broken
    with pytest.raises(AssertionError, match="handler raised: IndexError"):
        targets.run(_input(AGENT_COMMAND, COMMAND))


def test_an_unexpected_exception_escapes_the_target(monkeypatch):
    def broken(buf, max_size=0):
        raise IndexError("a bug in the decoder")

    monkeypatch.setattr(codec, "decode", broken)
    with pytest.raises(IndexError):
        Targets().run(_input(DECODE, DELTA_F16))


def test_an_undocumented_rejection_reason_fails_the_target(monkeypatch):
    def vague(buf, max_size=0):
        raise codec.CodecError("no good")

    monkeypatch.setattr(codec, "decode", vague)
    with pytest.raises(AssertionError, match="undocumented rejection reason"):
        Targets().run(_input(DECODE, DELTA_F16))
