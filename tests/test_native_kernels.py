"""The compiled training kernels (device_agent/native, the native module tmf_kernels) under a
real micropython: every kernel against its pure-Python twin, a device round both ways and
against the numpy twin, the fallback to the Python kernels when the module will not load, and
the build tool.

Tolerances. The C kernels compute in float32, rounding every partial sum (as MicroPython does on
a single-precision board); MicroPython's unix port accumulates the Python kernels' sums in
double. So values agree to float32 rounding, not bit for bit: a kernel's outputs within
KERNEL_TOL (64 float32 unit roundoffs, 2^-18 ≈ 3.8e-6) of the largest output magnitude (at
least 1) for sums of at most a dozen products (measured: 1.1e-7), a round's Δ within ROUND_TOL
relative (measured 1.4e-6 after 16 SGD steps, where differences of each step carry into the
next). Selections, copies and comparisons (max-pooling, ReLU, clipping, Top-P%, Δ) are exact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from broker_service.core.device_round import simulate_round
from broker_service.core.nn import NumpyNet
from broker_service.testing.session import ROOT, micropython_exe
from broker_service.tools import native_build
from device_agent import codec
from device_agent.model import Plan, init_params
from tests.helpers import rel_err
from tests.mpy import native_round

KERNEL_TOL = 2.0**-18
ROUND_TOL = 1e-5
MPY_ARCH = {"x64": 2, "armv7emsp": 7}  # sys.implementation._mpy >> 10 (py/persistentcode.h)


def _build(arch: str) -> Path:
    try:
        return native_build.build(arch, say=lambda line: None)
    except native_build.NativeBuildError as e:
        pytest.fail("cannot build the %s module: %s" % (arch, e), pytrace=False)


@pytest.fixture(scope="session")
def x64_module() -> Path:
    """build/native/x64/tmf_kernels.mpy, built (or found current) by native_build."""
    return _build("x64")


def _micropython(script: str, path: Path, heap: str = "256K") -> str:
    """stdout of a tests/mpy script under the unix port with only `path` (and the repository,
    which the script puts first) to import from."""
    return subprocess.run(
        [micropython_exe(), "-X", "heapsize=" + heap, script],
        cwd=ROOT,
        env={**os.environ, "MICROPYPATH": str(path)},
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float32 units in the last place."""

    def ordered(v: np.ndarray) -> np.ndarray:
        i = v.astype(np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(ordered(a) - ordered(b))


def test_module_header_is_mpy_6_3_for_its_architecture(x64_module):
    header = x64_module.read_bytes()[:4]
    assert header[:2] == b"M\x06"
    assert header[2] & 3 == 3 and (header[2] >> 2) & 0x2F == MPY_ARCH["x64"]


def test_each_kernel_matches_its_python_twin(x64_module):
    lines = _micropython("tests/mpy/native_check.py", x64_module.parent, "1M").splitlines()
    cases = [json.loads(line) for line in lines]
    assert len(cases) == 85, [c["case"] for c in cases]
    for case in cases:
        native = np.array(case["native"], dtype=np.float64)
        python = np.array(case["python"], dtype=np.float64)
        assert native.shape == python.shape, case["case"]
        if case["exact"]:
            assert np.array_equal(native, python), case["case"]
            continue
        scale = max(1.0, float(np.abs(python).max()))
        worst = float(np.abs(native - python).max())
        assert worst <= KERNEL_TOL * scale, (case["case"], worst, scale)


def test_tanh_is_within_one_ulp_of_the_rounded_float64_value(x64_module):
    lines = _micropython("tests/mpy/native_check.py", x64_module.parent, "1M").splitlines()
    cases = {c["case"]: c for c in map(json.loads, lines)}
    x = np.array(cases["tanh sweep inputs"]["native"], dtype=np.float32)
    y = np.array(cases["tanh sweep"]["native"], dtype=np.float32)
    reference = np.tanh(x.astype(np.float64)).astype(np.float32)
    assert _ulps(y, reference).max() <= 1


def _twin(model: str) -> bytes:
    """The numpy twin's payload of native_round's round of `model`."""
    plan = Plan(native_round.MODELS[model])
    theta = np.zeros(plan.n_params, dtype=np.float32)
    init_params(plan, theta, 5)
    xs, ys = zip(*native_round.samples(plan, 16), strict=True)
    result = simulate_round(
        NumpyNet(plan),
        theta[: plan.n_global],
        np.stack([np.array(x, dtype=np.float32) for x in xs]),
        np.array(ys),
        native_round.COMMAND,
        np.zeros(plan.n_global, dtype=np.float32),
    )
    return result.payload


def test_round_with_native_kernels_matches_python_and_the_numpy_twin(x64_module):
    lines = _micropython("tests/mpy/native_round.py", x64_module.parent).splitlines()
    rows = {(f[0], f[1]): f for f in (line.split() for line in lines)}
    assert set(rows) == {(k, m) for k in ("native", "python") for m in native_round.MODELS}
    for model in native_round.MODELS:
        native, python = rows["native", model], rows["python", model]
        assert native[3:6] == python[3:6], model  # MACs, samples, entries sent
        _, n_idx, n_val = codec.decode(bytes.fromhex(native[2]))
        _, p_idx, p_val = codec.decode(bytes.fromhex(python[2]))
        assert list(n_idx) == list(p_idx), model
        assert rel_err(n_val, p_val) < ROUND_TOL, model
        losses = [float(v) for v in native[6:]], [float(v) for v in python[6:]]
        assert np.allclose(*losses, rtol=ROUND_TOL), model
        _, t_idx, t_val = codec.decode(_twin(model))
        assert list(n_idx) == list(t_idx), model
        assert rel_err(n_val, t_val) < ROUND_TOL, model


def _module_variant(variant: str, folder: Path, x64_module: Path) -> None:
    """Put into `folder` the tmf_kernels.mpy a case needs (none when missing)."""
    folder.mkdir()
    if variant == "another architecture":
        shutil.copy(_build("armv7emsp"), folder / "tmf_kernels.mpy")
    elif variant == "another .mpy sub-version":
        data = bytearray(x64_module.read_bytes())
        data[2] = (data[2] & ~3) | 2  # a 6.2 module, as MicroPython 1.22 made
        (folder / "tmf_kernels.mpy").write_bytes(bytes(data))
    elif variant == "x64":
        shutil.copy(x64_module, folder / "tmf_kernels.mpy")


@pytest.mark.parametrize(
    ("variant", "why"),
    [
        ("x64", ""),
        ("another architecture", "ValueError: incompatible .mpy arch"),
        ("another .mpy sub-version", "ValueError: incompatible .mpy file"),
        ("missing", "ImportError: no module named 'tmf_kernels'"),
    ],
)
def test_agent_falls_back_to_python_kernels_and_says_why(variant, why, tmp_path, x64_module):
    _module_variant(variant, tmp_path / "lib", x64_module)
    status = json.loads(_micropython("tests/mpy/kernels_status.py", tmp_path / "lib"))
    used = "native" if variant == "x64" else "python"
    assert (status["kernels"], status["net"], status["why"]) == (used, used, why)
    assert status["insisted"] == ("tmf_kernels not usable: " + why if why else "")
    assert status["loss"] == pytest.approx(1.07861, rel=1e-5)  # the step ran either way


def test_native_build_skips_a_current_module(x64_module):
    before = x64_module.stat().st_mtime_ns
    said: list[str] = []
    assert native_build.build("x64", say=said.append) == x64_module
    assert said == ["x64: up to date (build/native/x64/tmf_kernels.mpy)"]
    assert x64_module.stat().st_mtime_ns == before


def test_native_build_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("MPY_DIR", str(tmp_path))
    with pytest.raises(native_build.NativeBuildError, match="set MPY_DIR or pass --mpy-dir"):
        native_build.build("x64", root=tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").symlink_to(shutil.which("make") or "/usr/bin/make")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(native_build.NativeBuildError) as e:
        native_build.build("armv7m")
    assert str(e.value) == (
        "armv7m: arm-none-eabi-gcc not found on PATH: "
        "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
    )


def test_native_build_command_line_reports_errors_on_one_line(tmp_path, capsys):
    assert native_build.main(["--arch", "x64", "--mpy-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("native_build: error: no MicroPython source")
