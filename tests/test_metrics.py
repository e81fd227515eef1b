"""Line protocol and the bounded spool (the InfluxDB sink's outage buffer)."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_service.observe.metrics import Spool, line, parse_line

names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)


@given(
    names,
    st.dictionaries(names, names, max_size=3),
    st.dictionaries(
        names,
        st.one_of(
            st.integers(-(2**62), 2**62),
            st.booleans(),
            st.floats(allow_nan=False, allow_infinity=False),
            names,
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 2**62),
)
def test_line_protocol_round_trip(measurement, tags, fields, ts):
    point = parse_line(line(measurement, tags, fields, ts))
    assert point.measurement == measurement and point.ts_ns == ts
    assert point.tags == {k: v for k, v in tags.items() if v}
    assert point.fields == fields


def test_non_finite_and_missing_fields_are_left_out():
    assert line("m", {}, {"a": 1.0, "b": math.nan, "c": None}, 5) == "m a=1.0 5"
    with pytest.raises(ValueError):
        line("m", {}, {"b": math.inf}, 5)


def test_spool_is_ordered_durable_and_bounded(tmp_path):
    spool = Spool(tmp_path, max_bytes=100)
    assert spool.append(["a %d" % i for i in range(5)]) == 0
    lines, size = spool.peek(2)
    assert lines == ["a 0", "a 1"]
    spool.consume(size)
    reopened = Spool(tmp_path, max_bytes=100)  # after a restart
    assert reopened.peek(10)[0] == ["a 2", "a 3", "a 4"]
    dropped = reopened.append(["b %02d xxxxxxxx" % i for i in range(10)])
    assert dropped > 0 and reopened.dropped == dropped
    kept = reopened.peek(100)[0]
    assert reopened.pending_bytes() <= 100 and kept[-1] == "b 09 xxxxxxxx"


def test_numpy_scalars_are_written_as_numbers():
    import numpy as np

    text = line("m", {}, {"a": np.float64(0.5), "b": np.float32(2.0), "c": np.int64(3)}, 1)
    assert text == "m a=0.5,b=2.0,c=3i 1"
    assert line("m", {}, {"x": np.float32("nan"), "y": 1}, 1) == "m y=1i 1"
    assert parse_line(text).fields == {"a": 0.5, "b": 2.0, "c": 3}
