"""Generated and mutated inputs never crash a decoder, the round ledger or the agent, and never
change the model unless they are valid updates (a short run; benchmarks/fuzz.py does 100,000+)."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_targets import SEEDS, Targets

TARGETS = Targets()


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.integers(0, 4), st.binary(max_size=300))
def test_random_bytes(which, body):
    TARGETS.run(bytes([which]) + body)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.integers(0, 4),
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
)
def test_mutated_valid_messages(which, seed, flips, cut):
    data = bytearray(seed)
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    TARGETS.run(bytes([which]) + bytes(data[: max(cut, 1)] if cut < len(data) else data))


def test_valid_seeds_are_accepted():
    TARGETS.run(bytes([2]) + SEEDS[0])
    TARGETS.run(bytes([0]) + SEEDS[1])
