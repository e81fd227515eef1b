"""The wire codec: round trips, fixed golden vectors, CRC-32 and float16 agreement, rejections."""

import struct
import zlib
from array import array

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from device_agent import codec, reasons
from device_agent.checksum import crc32
from device_agent.float16 import float_from_half, half_from_float

CODEC_REASONS = {
    reasons.TRUNCATED,
    reasons.OVERSIZED,
    reasons.BAD_MAGIC,
    reasons.BAD_VERSION,
    reasons.BAD_KIND,
    reasons.BAD_LENGTHS,
    reasons.BAD_CHECKSUM,
    reasons.BAD_ENCODING,
    reasons.BAD_VALUE_ENCODING,
    reasons.BAD_INDICES,
    reasons.BAD_VALUES,
    reasons.BAD_JSON,
}

GOLDEN = [
    (
        (codec.KIND_DELTA, 20, [0, 3, 19], [0.5, -1.25, 2.0], 7, 3, 30, codec.VALUE_F16),
        "544d010201011e0007000000030000001400000003000000090000005b7005bf00020f003800bd0040",
    ),
    (
        (codec.KIND_DELTA, 300, [1, 200], [1.0, -0.5], 1, 2, 5, codec.VALUE_INT8),
        "544d01020201050001000000020000002c01000002000000090000005c89729501c6010402013c7fc0",
    ),
    (
        (codec.KIND_MODEL, 2, None, [1.0, -2.0], 4, 4, 0),
        "544d01010000000004000000040000000200000002000000080000002e88ff790000803f000000c0",
    ),
]


@pytest.mark.parametrize("args,hexdump", GOLDEN)
def test_golden_vectors(args, hexdump):
    assert codec.encode(*args).hex() == hexdump
    h, idx, values = codec.decode(bytes.fromhex(hexdump))
    assert h.kind == args[0] and h.n == args[1] and h.model_version == args[4]
    assert list(idx) == (list(range(args[1])) if args[2] is None else args[2])


@st.composite
def sparse_vectors(draw):
    n = draw(st.integers(1, 3000))
    chosen = draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=min(n, 400)))
    idx = sorted(chosen)
    values = draw(
        st.lists(st.floats(-60000, 60000, width=32), min_size=len(idx), max_size=len(idx))
    )
    return n, idx, values


@settings(max_examples=200)
@given(
    sparse_vectors(),
    st.sampled_from([0, 1, 2]),
    st.sampled_from([codec.INDEX_AUTO, codec.INDEX_VARINT, codec.INDEX_BITMAP]),
)
@example((1, [0], [2.802596928649634e-45]), codec.VALUE_INT8, codec.INDEX_AUTO)  # scale underflow
def test_round_trip(vec, value_enc, index_enc):
    n, idx, values = vec
    buf = codec.encode(codec.KIND_DELTA, n, idx, values, 5, 9, 12, value_enc, index_enc)
    h, got_idx, got = codec.decode(bytes(buf))
    assert (h.n, h.k, h.round, h.model_version, h.samples) == (n, len(idx), 9, 5, 12)
    assert list(got_idx) == idx
    want = np.array(values, dtype=np.float32)
    got = np.array(got, dtype=np.float32)
    if value_enc == codec.VALUE_F32:
        np.testing.assert_array_equal(got, want)
    elif value_enc == codec.VALUE_F16:
        np.testing.assert_allclose(
            got, want.astype(np.float16).astype(np.float32), rtol=1e-3, atol=1e-7
        )
    else:
        scale = np.abs(want).max() / 127 if np.abs(want).max() else 1.0
        assert np.all(np.abs(got - want) <= scale * 0.5001 + 1e-6)


def test_varint_indices_cost_about_one_byte_each_at_ten_percent():
    n = 10_000
    idx = list(range(0, n, 10))
    buf = codec.encode(codec.KIND_DELTA, n, idx, [1.0] * len(idx), value_enc=codec.VALUE_INT8)
    assert codec.decode_header(buf).index_enc == codec.INDEX_VARINT
    assert len(buf) == codec.HEADER_SIZE + len(idx) + 4 + len(idx)


def test_dense_selection_uses_bitmap_or_all():
    n = 64
    many = list(range(0, n, 2))
    assert codec.choose_index_encoding(n, many) == codec.INDEX_BITMAP
    assert codec.choose_index_encoding(n, list(range(n))) == codec.INDEX_ALL


def test_command_round_trip():
    buf = codec.encode_command({"round": 4, "top_p": 10.0}, 3, 4)
    h, cmd = codec.decode_command(bytes(buf))
    assert cmd == {"round": 4, "top_p": 10.0} and h.round == 4 and h.model_version == 3


def _valid():
    return bytearray(codec.encode(codec.KIND_DELTA, 100, [2, 50], [1.0, 2.0], 1, 1, 3))


def _recrc(buf):
    crc = zlib.crc32(bytes(buf[: codec.CRC_OFFSET]))
    crc = zlib.crc32(bytes(buf[codec.HEADER_SIZE :]), crc)
    struct.pack_into("<I", buf, codec.CRC_OFFSET, crc)
    return buf


def _mutate(offset, fmt, value):
    buf = _valid()
    struct.pack_into(fmt, buf, offset, value)
    return _recrc(buf)


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"", reasons.TRUNCATED),
        (b"TM\x01", reasons.TRUNCATED),
        (bytes(40), reasons.BAD_MAGIC),
        (_mutate(2, "<B", 9), reasons.BAD_VERSION),
        (_mutate(3, "<B", 77), reasons.BAD_KIND),
        (_valid()[:-1], reasons.BAD_LENGTHS),
        (_valid() + b"\x00", reasons.BAD_LENGTHS),
        (_mutate(20, "<I", 1), reasons.BAD_LENGTHS),  # k smaller than what the body holds
        (_mutate(16, "<I", 10), reasons.BAD_INDICES),  # n smaller than an index
        (_mutate(4, "<B", 9), reasons.BAD_ENCODING),
    ],
)
def test_rejections_have_reasons(payload, reason):
    with pytest.raises(codec.CodecError) as err:
        codec.decode(bytes(payload))
    assert err.value.reason == reason


def test_checksum_catches_a_flipped_bit():
    buf = _valid()
    buf[-1] ^= 0x01
    with pytest.raises(codec.CodecError, match="bad_checksum"):
        codec.decode(bytes(buf))


def test_non_finite_values_are_rejected():
    buf = _valid()
    struct.pack_into("<f", buf, len(buf) - 4, float("nan"))
    with pytest.raises(codec.CodecError, match="bad_values"):
        codec.decode(bytes(_recrc(buf)))


def test_oversized_payload_is_rejected_before_parsing():
    with pytest.raises(codec.CodecError, match="oversized"):
        codec.decode_header(bytes(2000), max_size=1000)


@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoder(data):
    try:
        codec.decode(data)
    except codec.CodecError as err:
        assert err.reason in CODEC_REASONS


@given(st.binary(max_size=300))
def test_crc32_equals_zlib(data):
    assert crc32(data) == zlib.crc32(data)


def test_float16_matches_numpy_on_many_values():
    rng = np.random.default_rng(0)
    values = (rng.standard_normal(5000) * 10.0 ** rng.integers(-8, 5, 5000)).astype(np.float32)
    for v in values:
        ref = np.float32(v).astype(np.float16)
        assert half_from_float(float(v)) == int(ref.view(np.uint16))
        assert float_from_half(int(ref.view(np.uint16))) == float(ref)


def test_float16_saturates_instead_of_overflowing():
    assert float_from_half(half_from_float(1e9)) == 65504.0
    assert float_from_half(half_from_float(-1e9)) == -65504.0


@settings(max_examples=300)
@given(
    sparse_vectors(),
    st.sampled_from([0, 1, 2]),
    st.sampled_from([codec.INDEX_AUTO, codec.INDEX_VARINT, codec.INDEX_BITMAP]),
    st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), max_size=3),
    st.booleans(),
)
def test_fast_decoder_agrees_with_the_agent_decoder(vec, value_enc, index_enc, flips, fix_crc):
    from broker_service.core import fastcodec

    n, idx, values = vec
    buf = bytearray(codec.encode(codec.KIND_DELTA, n, idx, values, 1, 2, 3, value_enc, index_enc))
    for pos, value in flips:
        buf[pos % len(buf)] = value
    if fix_crc and len(buf) >= codec.HEADER_SIZE:
        _recrc(buf)
    data = bytes(buf)
    try:
        _, want_idx, want = codec.decode(data)
    except codec.CodecError as err:
        with pytest.raises(codec.CodecError) as fast_err:
            fastcodec.decode(data)
        assert fast_err.value.reason == err.reason
        return
    _, got_idx, got = fastcodec.decode(data)
    assert list(got_idx) == list(want_idx)
    np.testing.assert_array_equal(got, np.asarray(want, dtype=np.float32))


@pytest.mark.parametrize("values", ["f32", "f16", "int8"])
def test_a_compressed_model_decodes_the_same_on_the_agent_and_the_server(values):
    from broker_service.core import fastcodec

    theta = np.random.default_rng(3).normal(0, 0.7, 1153).astype(np.float32)
    payload = fastcodec.encode_model(theta, 4, values)
    size = codec.HEADER_SIZE + codec.value_section_size(len(theta), codec.value_encoding(values))
    assert len(payload) == size
    h = codec.decode_header(payload)
    params = array("f", bytes(4 * len(theta)))
    codec.decode_values(payload, h, codec.HEADER_SIZE, params, 0)  # as the agent loads θ_g
    sent = fastcodec.model_values(payload)
    np.testing.assert_array_equal(np.asarray(params, dtype=np.float32), sent)
    # the error of what is sent: none for f32, half a step of the encoding otherwise
    step = {"f32": 0.0, "f16": 2.0**-10 * np.abs(theta), "int8": np.abs(theta).max() / 127}
    assert np.all(np.abs(sent - theta) <= step[values] * 0.5 + 1e-7)


def test_the_fast_decoders_float16_table_is_the_conversion_bit_for_bit():
    from broker_service.core import fastcodec

    codes = np.arange(1 << 16, dtype=np.uint16)
    want = codes.view(np.float16).astype(np.float32).view(np.uint32)
    np.testing.assert_array_equal(fastcodec.F16_TABLE.view(np.uint32), want)


def test_the_one_byte_varint_path_agrees_and_refuses_an_index_past_n():
    """Indices whose gaps are all below 128 take the fast decoder's single cumulative sum; the
    result and the refusal of an index >= n are those of the agent's decoder."""
    from broker_service.core import fastcodec

    idx = list(range(3, 1200, 7))
    buf = bytearray(codec.encode(codec.KIND_DELTA, 5000, idx, [0.5] * len(idx), 1, 2, 3))
    assert buf[5] == codec.INDEX_VARINT  # the index encoding byte
    _, got_idx, got = fastcodec.decode(bytes(buf))
    assert got_idx.tolist() == idx and got.tolist() == [0.5] * len(idx)
    struct.pack_into("<I", buf, 16, idx[-1])  # n := the last index: it is now out of range
    _recrc(buf)
    with pytest.raises(codec.CodecError) as slow:
        codec.decode(bytes(buf))
    with pytest.raises(codec.CodecError) as fast:
        fastcodec.decode(bytes(buf))
    assert fast.value.reason == slow.value.reason == reasons.BAD_INDICES


def test_the_fast_decoder_reads_many_float16_values_as_the_agent_does():
    from broker_service.core import fastcodec

    rng = np.random.default_rng(3)
    n = 4 * fastcodec.TABLE_FROM
    idx = sorted(rng.choice(n, size=fastcodec.TABLE_FROM + 7, replace=False).tolist())
    values = (rng.standard_normal(len(idx)) * 100).tolist()
    data = bytes(codec.encode(codec.KIND_DELTA, n, idx, values, 1, 2, 3, codec.VALUE_F16))
    _, want_idx, want = codec.decode(data)
    _, got_idx, got = fastcodec.decode(data)
    assert got_idx.tolist() == list(want_idx)
    np.testing.assert_array_equal(got, np.asarray(want, dtype=np.float32))


@st.composite
def update_batches(draw):
    """Payloads as a batch of devices might send them: mostly float16 with small gaps (the
    batched shape), some other encodings, some corrupted (bytes flipped, n shrunk below an
    index, non-finite float16 codes), each with a valid CRC or not."""
    out = []
    for _ in range(draw(st.integers(1, 12))):
        n, idx, values = draw(sparse_vectors())
        value_enc = draw(st.sampled_from([codec.VALUE_F16] * 3 + [codec.VALUE_F32]))
        index_enc = draw(st.sampled_from([codec.INDEX_VARINT] * 3 + [codec.INDEX_AUTO]))
        buf = bytearray(
            codec.encode(codec.KIND_DELTA, n, idx, values, 1, 2, 3, value_enc, index_enc)
        )
        k = len(idx)
        corruption = draw(st.sampled_from(["none", "none", "n", "nan", "flip"]))
        if corruption == "n":
            struct.pack_into("<I", buf, 16, idx[-1])  # the last index is now out of range
        elif corruption == "nan" and value_enc == codec.VALUE_F16:
            at = len(buf) - 2 * draw(st.integers(1, k))
            struct.pack_into("<H", buf, at, draw(st.sampled_from([0x7C00, 0xFC00, 0x7E00])))
        elif corruption == "flip":
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
        if corruption != "flip" or draw(st.booleans()):
            _recrc(buf)
        out.append(bytes(buf))
    return out


@settings(max_examples=300, deadline=None)  # batches of up to 12 payloads; no timing here
@given(update_batches())
def test_batch_decoding_equals_decoding_each_payload(payloads):
    """decode_many gives, for every payload, what decode gives: the same indices and values
    bit for bit, or the same refusal with the same reason and detail."""
    from broker_service.core import fastcodec

    for buf, got in zip(payloads, fastcodec.decode_many(payloads), strict=True):
        try:
            h, want_idx, want = fastcodec.decode(buf)
        except codec.CodecError as err:
            assert isinstance(got, codec.CodecError)
            assert (got.reason, str(got)) == (err.reason, str(err))
            continue
        assert not isinstance(got, codec.CodecError), got
        assert got[0].round == h.round and got[0].n == h.n
        assert got[1].tolist() == want_idx.tolist()
        np.testing.assert_array_equal(got[2].view(np.uint32), want.view(np.uint32))
