"""Top-P% selection properties (hypothesis): count, order, magnitude dominance, tie-breaking."""

from array import array

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.topk import kth_largest, select_top_k, top_k_count

floats = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32)


@given(st.integers(0, 10_000), st.floats(0.01, 100.0))
def test_top_k_count_is_ceiling_within_bounds(n, percent):
    k = top_k_count(n, percent)
    if n == 0:
        assert k == 0
    else:
        assert 1 <= k <= n
        assert k >= n * percent / 100.0 - 1e-9
        assert k - 1 < max(n * percent / 100.0, 1)


@settings(max_examples=300)
@given(st.lists(floats, min_size=1, max_size=300), st.data())
def test_selection_properties(values, data):
    delta = array("f", values)
    k = data.draw(st.integers(1, len(delta)))
    idx = list(select_top_k(delta, k))
    assert len(idx) == k
    assert idx == sorted(set(idx))
    chosen = set(idx)
    mags = [abs(v) for v in delta]
    low_in = min(mags[i] for i in idx)
    rest = [mags[i] for i in range(len(delta)) if i not in chosen]
    assert all(m <= low_in for m in rest)
    # ties at the threshold go to the lowest indices
    tied_out = [i for i in range(len(delta)) if i not in chosen and mags[i] == low_in]
    tied_in = [i for i in idx if mags[i] == low_in]
    if tied_out:
        assert max(tied_in) < min(tied_out)


@given(st.lists(floats, min_size=1, max_size=200), st.data())
def test_kth_largest_matches_sorting(values, data):
    k = data.draw(st.integers(1, len(values)))
    scratch = array("f", values)
    expected = sorted(array("f", values), reverse=True)[k - 1]
    assert kth_largest(scratch, k) == expected


def test_selection_on_all_equal_and_adversarial_inputs():
    assert list(select_top_k(array("f", [1.0] * 10), 3)) == [0, 1, 2]
    ramp = array("f", np.arange(1000, dtype=np.float32))
    assert list(select_top_k(ramp, 5)) == [995, 996, 997, 998, 999]
    signs = array("f", [(-1) ** i * (i % 7) for i in range(100)])
    assert all(abs(signs[i]) == 6 for i in select_top_k(signs, 14))


def test_selection_over_a_prefix_ignores_the_rest_of_the_buffer():
    buffer = array("f", [0.5, -3.0, 0.25, 2.0, 99.0, -99.0])
    assert list(select_top_k(buffer, 2, n=4)) == list(select_top_k(buffer[:4], 2)) == [1, 3]
    assert kth_largest(array("f", [1.0, 4.0, 2.0, 50.0]), 1, n=3) == 4.0
