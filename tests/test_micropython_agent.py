"""The agent's maths under a real MicroPython (unix port, 256 KB heap) equals CPython and numpy."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from broker_service.core import fastcodec
from broker_service.core.device_round import simulate_round
from broker_service.core.nn import NumpyNet
from broker_service.testing.session import micropython_exe
from device_agent import codec
from tests.helpers import rel_err

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "tests/mpy/round_once.py"


def _lines(cmd: list[str]) -> list[str]:
    return subprocess.run(
        cmd,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout.split("\n")


def run(cmd: list[str]) -> tuple[bytes, list[int], bytes]:
    """(first payload, its macs/samples/nnz, the payload of a later round with a stale
    residual) printed by the script."""
    out = _lines(cmd)
    return bytes.fromhex(out[0]), [int(v) for v in out[1].split()], bytes.fromhex(out[2])


def test_round_under_micropython_matches_cpython_and_numpy():
    mp_payload, mp_stats, mp_stale = run([micropython_exe(), "-X", "heapsize=256K", SCRIPT])
    py_payload, py_stats, py_stale = run([sys.executable, SCRIPT])
    assert mp_stats == py_stats
    _, mp_idx, mp_val = codec.decode(mp_payload)
    _, py_idx, py_val = codec.decode(py_payload)
    assert list(mp_idx) == list(py_idx)
    assert rel_err(mp_val, py_val) < 1e-6

    sys.path.insert(0, str(ROOT))
    import importlib

    mod = importlib.import_module("tests.mpy.round_once")
    plan = mod.plan
    from device_agent.model import init_params

    theta = np.zeros(plan.n_params, dtype=np.float32)
    init_params(plan, theta, 5)
    xs, ys = zip(*[(np.array(x, dtype=np.float32), y) for x, y in mod.samples(14)], strict=True)
    residual = np.zeros(plan.n_global, dtype=np.float32)
    twin = simulate_round(
        NumpyNet(plan), theta[: plan.n_global], np.stack(xs), np.array(ys), mod.command, residual
    )
    _, np_idx, np_val = codec.decode(twin.payload)
    assert list(np_idx) == list(mp_idx)
    assert rel_err(mp_val, np_val) < 1e-5
    stale = simulate_round(
        NumpyNet(plan), theta[: plan.n_global], np.stack(xs), np.array(ys), mod.stale, residual, 1
    )
    for payload in (mp_stale, py_stale):
        _, idx, val = codec.decode(payload)
        assert list(idx) == list(codec.decode(stale.payload)[1])
        assert rel_err(val, codec.decode(stale.payload)[2]) < 1e-5


def test_codec_decisions_are_identical_under_micropython_exe():
    """Golden vectors, every value/index encoding and every rejection path, on both runtimes."""
    from tests.test_codec import GOLDEN, _mutate, _valid

    cases = [bytes.fromhex(h) for _, h in GOLDEN]
    for value_enc in (0, 1, 2):
        for index_enc in (codec.INDEX_VARINT, codec.INDEX_BITMAP):
            cases.append(
                codec.encode(
                    codec.KIND_DELTA,
                    40,
                    [0, 7, 39],
                    [0.25, -3.5, 1e-3],
                    2,
                    3,
                    4,
                    value_enc,
                    index_enc,
                )
            )
    theta = np.linspace(-2.5, 3.0, 50).astype(np.float32)
    first = len(cases)
    for values in ("f32", "f16", "int8"):  # θ_g as the service sends it (model_values)
        cases.append(fastcodec.encode_model(theta, 7, values))
    cases += [
        codec.encode_command({"round": 3, "cancel": True}, 1, 3),
        b"",
        b"TM\x01",
        bytes(40),
        _mutate(2, "<B", 9),
        _mutate(3, "<B", 77),
        _valid()[:-1],
        _mutate(16, "<I", 10),
        _mutate(4, "<B", 9),
    ]
    stdin = "\n".join(bytes(c).hex() or "00" for c in cases)
    outs = []
    for cmd in (
        [micropython_exe(), "-X", "heapsize=256K", "tests/mpy/codec_check.py"],
        [sys.executable, "tests/mpy/codec_check.py"],
    ):
        outs.append(
            subprocess.run(
                cmd, cwd=ROOT, input=stdin, check=True, capture_output=True, text=True, timeout=60
            ).stdout
        )
    assert outs[0] == outs[1]
    assert outs[0].count("rejected") == 8 and "bad_indices" in outs[0]
    # the models decode to what the server's decoder says the devices train on
    lines = outs[0].splitlines()
    for values, line in zip(("f32", "f16", "int8"), lines[first : first + 3], strict=True):
        want = fastcodec.model_values(fastcodec.encode_model(theta, 7, values))
        hexes = ["%08x" % b for b in want.view(np.uint32)]
        assert line == "ok 50 50 %s %s" % (list(range(50)), hexes)


def test_sessions_and_reconnects_are_identical_under_micropython_exe():
    """The agent's sessions over a scripted fake transport (tests/mpy/session_check.py)."""
    outs = []
    for cmd in (
        [micropython_exe(), "-X", "heapsize=256K", "tests/mpy/session_check.py"],
        [sys.executable, "tests/mpy/session_check.py"],
    ):
        outs.append(
            subprocess.run(
                cmd,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            ).stdout
        )
    assert outs[0] == outs[1]
    assert "reconnect sleeps [500, 1000, 500]" in outs[0]
    assert "lost events connected model training disconnected connected training round" in outs[0]
    assert outs[0].count(" update 0 2 ") == 2
