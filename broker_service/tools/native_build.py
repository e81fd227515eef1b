"""Build the compiled training kernels (device_agent/native/, the natmod `tmf_kernels`) per
architecture into build/native/<arch>/tmf_kernels.mpy.

    python -m broker_service.tools.native_build [--arch x64 armv7emsp ...] [--mpy-dir DIR]

It needs a MicroPython source tree (`--mpy-dir`, else $MPY_DIR, else ../shared/micropython beside
the repository: py/dynruntime.mk and tools/mpy_ld.py), `make`, the architecture's C cross
compiler, and the Python packages pyelftools and ar (for mpy_ld.py, run with this interpreter).
The sources are copied into build/native/<arch>/src and built there, so the MicroPython tree may
be read-only; a build whose sources, flags and MicroPython tree are unchanged is skipped. The
.mpy is replaced atomically, under a lock, so parallel runs do not see a half-written file.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "device_agent" / "native"
SOURCES = ("Makefile", "kernels.c", "kernels.h", "tmf_kernels.c")
MODULE = "tmf_kernels.mpy"
MPY_DIR_FILES = ("py/dynruntime.mk", "py/dynruntime.h", "py/persistentcode.h", "tools/mpy_ld.py")
ABI_FILES = ("py/dynruntime.mk", "py/dynruntime.h", "py/persistentcode.h", "py/nativeglue.h")


@dataclass(frozen=True)
class Toolchain:
    """The C compiler an architecture needs and where to get it."""

    compiler: str
    install: str


TOOLCHAINS = {
    "x64": Toolchain(
        "x86_64-linux-gnu-gcc",
        "apt-get install gcc (on an x86-64 host; gcc-x86-64-linux-gnu elsewhere)",
    ),
    "armv6m": Toolchain(
        "arm-none-eabi-gcc", "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
    ),
    "armv7m": Toolchain(
        "arm-none-eabi-gcc", "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
    ),
    "armv7emsp": Toolchain(
        "arm-none-eabi-gcc", "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
    ),
    "rv32imc": Toolchain(
        "riscv64-unknown-elf-gcc",
        "apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf",
    ),
    "xtensawin": Toolchain(
        "xtensa-esp32-elf-gcc",
        "Espressif's ESP-IDF tools (install.sh, then . ./export.sh puts it on PATH)",
    ),
}
DEFAULT_ARCHES = ("x64", "armv6m", "armv7m", "armv7emsp", "rv32imc")
"""What `native_build` builds without --arch (xtensawin needs Espressif's toolchain)."""


class NativeBuildError(RuntimeError):
    """A build that cannot run or failed; the message is one line saying what to do."""


def module_path(arch: str, root: Path = ROOT) -> Path:
    """Where the built module of `arch` lives (whether or not it is built)."""
    return root / "build" / "native" / arch / MODULE


def find_mpy_dir(explicit: str | Path | None = None, root: Path = ROOT) -> Path:
    """The MicroPython source tree: `explicit`, else $MPY_DIR, else ../shared/micropython beside
    the repository; NativeBuildError naming what is missing otherwise."""
    given = explicit or os.environ.get("MPY_DIR")
    path = Path(given) if given else root.parent / "shared" / "micropython"
    missing = [name for name in MPY_DIR_FILES if not (path / name).is_file()]
    if missing:
        how = "--mpy-dir" if explicit else ("$MPY_DIR" if given else "default")
        raise NativeBuildError(
            "no MicroPython source tree at %s (%s; lacks %s): set MPY_DIR or pass --mpy-dir to a "
            "clone of https://github.com/micropython/micropython (v1.23 or later)"
            % (path, how, missing[0])
        )
    return path.resolve()


def check_tools(arch: str) -> None:
    """make, the architecture's compiler and mpy_ld.py's Python packages, or a one-line error
    naming what to install."""
    if arch not in TOOLCHAINS:
        raise NativeBuildError(
            "unknown architecture %r; known: %s" % (arch, ", ".join(sorted(TOOLCHAINS)))
        )
    if shutil.which("make") is None:
        raise NativeBuildError("%s: make not found: apt-get install make" % arch)
    chain = TOOLCHAINS[arch]
    if shutil.which(chain.compiler) is None:
        raise NativeBuildError(
            "%s: %s not found on PATH: %s" % (arch, chain.compiler, chain.install)
        )
    for package, module in (("pyelftools", "elftools"), ("ar", "ar")):
        if importlib.util.find_spec(module) is None:
            raise NativeBuildError(
                "%s: the Python package %s is missing (mpy_ld.py needs it): pip install %s"
                % (arch, package, package)
            )


def fingerprint(arch: str, mpy_dir: Path, opt: str | None) -> str:
    """Hash of what the module depends on: its sources, the architecture, the optimisation
    flag and the MicroPython tree's native ABI files."""
    h = hashlib.sha256()
    h.update(("%s|%s\n" % (arch, opt or "")).encode())
    for name in SOURCES:
        h.update((SOURCE / name).read_bytes())
    for name in ABI_FILES:
        path = mpy_dir / name
        h.update(path.read_bytes() if path.is_file() else b"-")
    return h.hexdigest()


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make(arch: str, work: Path, mpy_dir: Path, opt: str | None) -> None:
    cmd = ["make", "-C", str(work), "ARCH=" + arch, "MPY_DIR=%s" % mpy_dir, "BUILD=obj"]
    cmd += ["PYTHON=" + sys.executable]
    if opt:
        cmd.append("OPT=" + opt)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
        raise NativeBuildError("%s: make failed: %s" % (arch, lines[-1].strip()))


def build(
    arch: str,
    mpy_dir: str | Path | None = None,
    root: Path = ROOT,
    force: bool = False,
    opt: str | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Build tmf_kernels.mpy for `arch` unless it is current; returns its path."""
    check_tools(arch)
    tree = find_mpy_dir(mpy_dir, root)
    target = module_path(arch, root)
    folder = target.parent
    with _locked(folder):
        stamp = folder / "tmf_kernels.stamp"
        key = fingerprint(arch, tree, opt)
        if not force and target.is_file() and stamp.is_file() and stamp.read_text() == key:
            say("%s: up to date (%s)" % (arch, _shown(target, root)))
            return target
        say("%s: building with %s and %s" % (arch, TOOLCHAINS[arch].compiler, tree))
        start = time.monotonic()
        work = folder / "src"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for name in SOURCES:
            shutil.copy(SOURCE / name, work / name)
        _make(arch, work, tree, opt)
        fresh = folder / (MODULE + ".new")
        shutil.copy(work / MODULE, fresh)
        os.replace(fresh, target)
        stamp.write_text(key)
        say(
            "%s: built %s (%d bytes) in %.1f s"
            % (arch, _shown(target, root), target.stat().st_size, time.monotonic() - start)
        )
    return target


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    """Command line: build each architecture asked for; 1 when any failed."""
    p = argparse.ArgumentParser(
        prog="python -m broker_service.tools.native_build",
        description="Build the compiled training kernels (tmf_kernels.mpy) per architecture.",
    )
    p.add_argument(
        "--arch",
        nargs="+",
        default=list(DEFAULT_ARCHES),
        choices=sorted(TOOLCHAINS),
        help="architectures (default: %s)" % " ".join(DEFAULT_ARCHES),
    )
    p.add_argument(
        "--mpy-dir", help="MicroPython source tree (default: $MPY_DIR, ../shared/micropython)"
    )
    p.add_argument("--force", action="store_true", help="rebuild even when current")
    p.add_argument("--opt", help="C optimisation flag instead of the Makefile's -O2, e.g. -Os")
    args = p.parse_args(argv)
    failed = 0
    for arch in args.arch:
        try:
            build(arch, args.mpy_dir, force=args.force, opt=args.opt)
        except NativeBuildError as e:
            print("native_build: error: %s" % e, file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
