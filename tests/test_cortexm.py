"""The agent on Cortex-M MicroPython firmware under QEMU (broker_service.tools.firmware): its
device round, run from .mpy files in a ROMFS image through the agent's own session path
(tests/mpy/cortexm_round.py: Agent, the tests' fake transport, synthetic samples), matches the
unix port's on the MPS2_AN500 (Cortex-M7, FPU) and MPS2_AN385 (Cortex-M3, soft float)
single-precision firmware; with the compiled kernels (build/native/<arch>/tmf_kernels.mpy) in
the image too.

Tolerance. Inputs, targets and θ_g are exact in float32 and both runtimes store every parameter
and activation in array('f'); they differ only in rounding: the unix port computes Python floats
in double and rounds once when it stores, the firmware rounds every product, sum, exp and log to
float32 (the compiled kernels too, in their own order). An SGD step's update then differs by a
few float32 roundoffs of the update itself, far below a parameter's unit in the last place, and
its store into float32 can round the other way: at most one ulp of |θ| a step. Over the S steps
that train θ_g (the adaptation samples) Δ = φ − θ may differ by up to S·ulp(max|θ_g|) (at most
20 × 2^-25 ≈ 6e-7 here, against |Δ| up to 1.6e-2; measured: one ulp, 3e-8). A loss is a
mean of N per-sample losses each within a few float32 roundoffs: relative LOSS_ROUNDOFFS·N·2^-24
(measured 2e-7). Top-P% indices agree exactly, except between entries whose |Δ| lie within the
tolerance of the selection's threshold (a tie at float32 resolution).
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from broker_service.testing.session import ROOT, micropython_exe
from broker_service.tools import firmware, romfs_image
from device_agent import codec
from tests.mpy import cortexm_round

BOARDS = ("MPS2_AN500", "MPS2_AN385")
SCRIPT = "tests/mpy/cortexm_round.py"
IMAGE_FILES = ("tests/__init__.py", "tests/mpy/__init__.py", "tests/mpy/fake_transport.py", SCRIPT)
RUN = "from tests.mpy.cortexm_round import main\nmain()\n"
TIMEOUT = 120.0
"""Seconds a firmware gets for the three rounds (about 2 s of QEMU on the Cortex-M7)."""
LOSS_ROUNDOFFS = 4
"""float32 roundoffs a per-sample loss may differ by (exp and log are within 1-2 ulp)."""


@pytest.fixture(scope="session")
def firmwares() -> dict[str, Path]:
    """Each board's firmware.elf, built by broker_service.tools.firmware (skipped when current);
    a missing toolchain or MicroPython tree fails with what to install."""
    try:
        return {name: firmware.build(name, log=lambda line: None) for name in BOARDS}
    except firmware.FirmwareError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def unix_round() -> dict:
    """The rounds under the unix port (double-precision Python floats, pure kernels)."""
    out = subprocess.run(
        [micropython_exe(), "-X", "heapsize=256K", SCRIPT],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return parse(out.splitlines())


def parse(lines: list[str]) -> dict:
    """{model: (indices, values, losses)} and "kernels" from cortexm_round's lines."""
    updates: dict = {}
    losses: dict = {}
    out: dict = {}
    for line in lines:
        parts = line.split()
        if parts[:1] == ["update"]:
            _, idx, values = codec.decode(bytes.fromhex(parts[2]))
            updates[parts[1]] = (list(idx), np.array(values, dtype=np.float64))
        elif parts[:1] == ["loss"]:
            losses[parts[1]] = np.array([float(v) for v in parts[2:]])
        elif parts[:1] == ["kernels"]:
            out["kernels"] = parts[1]
    for name in updates:
        out[name] = (*updates[name], losses[name])
    return out


def on_firmware(board: str, native: bool = False) -> dict:
    """The rounds on `board`'s firmware, from a ROMFS image of .mpy files."""
    extra: dict[str, str | bytes | Path] = {path: ROOT / path for path in IMAGE_FILES}
    image = firmware.image(board, extra, native)
    return parse(firmware.run(board, RUN, image, TIMEOUT))


def steps(settings: dict) -> tuple[int, int]:
    """(SGD steps that train θ_g, samples whose losses are averaged) of a round's settings."""
    adapt = int(settings.get("adapt_samples", 20))
    return adapt, adapt + int(settings.get("recon_samples", 10))


def ulp(x: float) -> float:
    """float32's unit in the last place at |x| (x normal)."""
    return 2.0 ** (math.floor(math.log2(abs(x))) - 23)


def assert_top_p_matches(got: list[int], want: list[int], magnitudes: dict, tol: float):
    """Equal index sets, or differing only between entries at the selection's threshold."""
    if got == want:
        return
    threshold = min(magnitudes.values())
    for i in set(got) ^ set(want):
        assert abs(magnitudes.get(i, threshold) - threshold) <= tol, (i, got, want)


def assert_rounds_match(device: dict, unix: dict) -> None:
    """Each model's Top-P% indices, Δ values and losses agree within float32 rounding."""
    for name, _spec, settings in cortexm_round.MODELS:
        idx, values, losses = device[name]
        want_idx, want_values, want_losses = unix[name]
        s_theta, n_losses = steps(settings)
        theta = np.array(cortexm_round.theta(64), dtype=np.float64)
        tol = s_theta * ulp(float(np.max(np.abs(theta)) + np.max(np.abs(want_values))))
        magnitudes = dict(zip(want_idx, np.abs(want_values), strict=True))
        magnitudes.update(zip(idx, np.abs(values), strict=True))
        assert_top_p_matches(idx, want_idx, magnitudes, tol)
        common = sorted(set(idx) & set(want_idx))
        mine = dict(zip(idx, values, strict=True))
        theirs = dict(zip(want_idx, want_values, strict=True))
        worst = max(abs(mine[i] - theirs[i]) for i in common)
        assert worst <= tol, "%s: Δ differs by %.3g > %.3g" % (name, worst, tol)
        rtol = LOSS_ROUNDOFFS * n_losses * 2.0**-24
        np.testing.assert_allclose(losses, want_losses, rtol=rtol, err_msg=name)


@pytest.mark.parametrize("board", BOARDS)
def test_round_on_cortex_m_matches_the_unix_port(board, firmwares, unix_round):
    device = on_firmware(board)
    assert device["kernels"] == "pure"
    assert set(device) == set(unix_round)
    assert_rounds_match(device, unix_round)


@pytest.mark.parametrize("board", BOARDS)
def test_round_with_the_compiled_kernels_matches_the_unix_port(board, firmwares, unix_round):
    arch = firmware.board(board).arch
    assert firmware.native_module(firmware.board(board)) is not None, (
        "compiled kernels not built: build/native/%s/tmf_kernels.mpy (scripts/setup.sh --test "
        "builds them)" % arch
    )
    device = on_firmware(board, native=True)
    assert device["kernels"] == "native"
    assert_rounds_match(device, unix_round)


def test_the_tolerance_catches_a_wrong_round(unix_round):
    """A round with one adaptation step fewer is outside the tolerance: the check can fail."""
    name, spec, settings = cortexm_round.MODELS[0]
    idx, values, losses = unix_round[name]
    shifted = dict(unix_round)
    shifted[name] = (idx, values * (1 + 1.0 / 20), losses)
    with pytest.raises(AssertionError):
        assert_rounds_match(shifted, unix_round)


def test_a_script_error_and_a_deadline(firmwares):
    """A traceback comes back as ScriptError; a script past its deadline has QEMU killed."""
    with pytest.raises(romfs_image.ScriptError, match="ZeroDivisionError"):
        firmware.run("MPS2_AN500", "print('before')\n1/0\n", timeout=30)
    with pytest.raises(romfs_image.ScriptTimeout) as caught:
        firmware.run("MPS2_AN500", "print('spinning')\nwhile True:\n    pass\n", timeout=3)
    assert "spinning" in caught.value.lines


def test_heap_probe_reports_a_full_round(firmwares):
    """`firmware heap` runs a use case's default round as a board does and reads its heap at
    every stage (the figures themselves are reported, not asserted: docs, the device bench)."""
    img = firmware.probe_image("MPS2_AN500", native=False)
    ok, lines = firmware.heap_round("occupancy", img)
    assert ok
    figures = firmware.parse_heap("occupancy", lines)
    stages = figures.stages
    assert stages["boot"] > stages["imported"] > stages["built"] >= figures.low > 0
    assert figures.low_block <= figures.low
    assert sum(1 for line in lines if line.startswith("heap sample")) == 40
