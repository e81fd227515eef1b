"""A sleeping device's flash files (device_agent.state, device_agent.ring), its config block and
the work order's fields: pure checks, and the same script under the real micropython and
CPython (tests/mpy/sleepy_check.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from broker_service.testing.session import ROOT, micropython_exe
from device_agent import codec, reasons, state, validate
from device_agent.config import AgentConfigError, make_config
from device_agent.datasource import make_source, write_sample_file
from device_agent.model import Plan
from device_agent.specs import spec_for
from device_agent.wake import sample_at

SCRIPT = "tests/mpy/sleepy_check.py"


def test_flash_files_are_identical_under_micropython_and_cpython(tmp_path):
    outs = []
    for name, exe in (
        ("mp", [micropython_exe(), "-X", "heapsize=256K"]),
        ("py", [sys.executable]),
    ):
        folder = tmp_path / name
        folder.mkdir()
        outs.append(
            subprocess.run(
                [*exe, SCRIPT, str(folder)],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            ).stdout
        )
    assert outs[0] == outs[1]
    out = outs[0]
    for use_case in ("sine", "kws"):
        for what, reason in (
            ("truncated", "truncated"),
            ("longer", "bad_checksum"),
            ("header bit", "bad_checksum"),
            ("model bit", "bad_checksum"),
            ("residual bit", "bad_checksum"),
            ("update bit", "bad_checksum"),
            ("magic", "bad_magic"),
            ("format", "bad_version"),
            ("empty", "truncated"),
        ):
            assert "%s %s %s\n" % (use_case, what, reason) in out
        assert "%s other capacity bad_lengths" % use_case in out
        assert "%s bad header bad_checksum 0" % use_case in out
    assert "load missing missing" in out
    assert "torn tmp None model=2" in out and "tmp left False" in out
    assert "tmp only None model=4" in out and "renamed True" in out
    assert "corrupted bad_checksum model=None" in out
    # a ring of 4 after 7 sensor wakes (one failed reading): the last 4 samples, oldest first
    assert "sine ring 6 7 %d" % (20 + 4 * 4 * 2) in out
    assert "sine since 4 2 ['2.000:1.00', '3.000:1.50']" in out
    assert "kws since 9 4" in out


def _example(plan: Plan) -> state.State:
    from array import array

    st = state.State()
    theta = array("f", [0.01 * (i % 9) for i in range(plan.n_global)])
    st.model = bytes(codec.encode(codec.KIND_MODEL, plan.n_global, None, theta, 5, 5))
    st.residual = array("f", [0.25] * plan.n_global)
    st.residual_round = 5
    st.newest = (9, 5, 5)
    st.last_trained = 5
    st.update = b"u" * 200
    st.update_version = 5
    return st


@pytest.mark.parametrize("use_case", ["sine", "kws"])
def test_state_round_trip_and_size(use_case):
    plan = Plan(spec_for(use_case))
    st = _example(plan)
    data = state.encode(st)
    # header, float32 model, float32 residual, the update, CRC
    assert len(data) == state.HEADER_SIZE + (32 + 4 * plan.n_global) + 4 * plan.n_global + 204
    back = state.decode(data, plan, 65536)
    assert back.model == st.model and back.header.model_version == 5
    assert list(back.residual) == list(st.residual)
    assert (back.newest, back.last_trained, back.residual_round) == ((9, 5, 5), 5, 5)
    assert back.update == st.update and back.update_version == 5
    assert state.encode(back) == data


def test_state_bounds_refuse_oversized_sections():
    plan = Plan(spec_for("sine"))
    st = _example(plan)
    st.update = b"u" * (state.update_limit(plan) + 1)
    with pytest.raises(validate.Refused) as exc:
        state.decode(state.encode(st), plan, 65536)
    assert exc.value.reason == reasons.BAD_LENGTHS
    st = _example(plan)
    with pytest.raises(validate.Refused) as exc:  # a model over the board's own cap
        state.decode(state.encode(st), plan, 1000)
    assert exc.value.reason == reasons.BAD_LENGTHS


def test_save_replaces_atomically(tmp_path):
    plan = Plan(spec_for("sine"))
    path = str(tmp_path / "state.bin")
    st = _example(plan)
    state.save(path, st)
    assert not (tmp_path / "state.bin.tmp").exists()
    st.last_trained = 6
    state.save(path, st)
    assert state.load(path, plan, 65536)[0].last_trained == 6
    (tmp_path / "state.bin").write_bytes(b"garbage")
    fresh, why = state.load(path, plan, 65536)
    assert why == reasons.TRUNCATED and fresh.model is None and fresh.update is None


def test_loaded_update_stays_in_flash_until_read(tmp_path):
    """load() leaves the unacknowledged update in the file (a training wake's heap never holds
    it); a save that moves it (no residual now) copies it along, and a flipped bit in it is
    still caught."""
    plan = Plan(spec_for("kws"))
    path = str(tmp_path / "state.bin")
    st = _example(plan)
    st.update = bytes(range(256)) * 20  # longer than a chunk, not a multiple of it
    st.update = st.update[: len(st.update) - 7]
    state.save(path, st)
    back, why = state.load(path, plan, 65536)
    assert why is None and isinstance(back.update, state.Kept)
    assert len(back.update) == len(st.update)
    back.residual = None
    state.save(path, back)  # the kept update copied from the old file into the new one
    assert isinstance(back.update, state.Kept) and back.update.read() == st.update
    again, why = state.load(path, plan, 1 << 20)
    assert why is None and state.update_bytes(again) == st.update
    data = bytearray((tmp_path / "state.bin").read_bytes())
    data[-10] ^= 0x01  # inside the update
    (tmp_path / "state.bin").write_bytes(bytes(data))
    fresh, why = state.load(path, plan, 1 << 20)
    assert why == reasons.BAD_CHECKSUM and fresh.update is None


def test_work_order_fields_are_checked():
    base = {"round": 3, "version": 3}
    for good in (
        {"async": True, "want": False, "receipt": 2},
        {"receipt": 0, "receipt_reason": "too_stale"},
        {"receipt": 0xFFFFFFFF},
    ):
        validate.check_settings({**base, **good})
    for bad in (
        {"async": 1},
        {"want": "yes"},
        {"receipt": -1},
        {"receipt": 2**32},
        {"receipt": True},
        {"receipt": 2.0},
        {"receipt_reason": "because"},
        {"receipt_reason": 3},
    ):
        with pytest.raises(validate.Refused) as exc:
            validate.check_settings({**base, **bad})
        assert exc.value.reason == reasons.BAD_SETTING


def test_sleep_and_battery_config():
    cfg = make_config({"device_id": "d", "sleep": {"ring": 8}, "battery": {"mah": 1000}})
    assert cfg["sleep"]["ring"] == 8 and cfg["sleep"]["train_every_s"] == 3600
    assert cfg["battery"] == {"mah": 1000, "volts": 3.7, "usable": 0.8}
    assert make_config({"device_id": "d"}).get("sleep") is None
    for bad in (
        {"sleep": {"ring": 0}},
        {"sleep": {"ring": 5000}},
        {"sleep": {"train_every_s": 0}},
        {"sleep": {"receipt_ms": 1.5}},
        {"sleep": {"state": ""}},
        {"sleep": {"halt_after_write": 1}},
        {"sleep": []},
        {"battery": {"usable": 1.5}},
        {"battery": {"mah": float("nan")}},
        {"battery": {"volts": 0}},
    ):
        with pytest.raises(AgentConfigError):
            make_config({"device_id": "d", **bad})


def test_a_sensor_wake_takes_the_next_sample(tmp_path):
    """Sample number n of a file (wrapping round) or of the synthetic source."""
    plan = Plan(spec_for("occupancy"))
    path = str(tmp_path / "s.csv")
    xs = [[float(i)] * 5 for i in range(3)]
    write_sample_file(path, xs, [0, 1, 0])
    cfg = {"data": {"kind": "file", "path": path}}
    firsts = [sample_at(cfg, plan, n)[0][0] for n in range(7)]
    assert firsts == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]
    assert sample_at(cfg, plan, 1000)[0][0] == 1000 % 3
    synthetic = {"data": {"kind": "synthetic", "seed": 1}}
    a = list(sample_at(synthetic, plan, 0)[0])
    b = list(sample_at(synthetic, plan, 1)[0])
    assert a != b and a == list(next(make_source(synthetic, plan))[0])
