"""Cortex-M MicroPython firmware under QEMU: the agent as a board runs it.

    python -m broker_service.tools.firmware build [--board MPS2_AN500 ...] [--all]
    python -m broker_service.tools.firmware check [--board ...]
    python -m broker_service.tools.firmware run SCRIPT [--board ...] [--extra FILE ...]
    python -m broker_service.tools.firmware heap [--use-case ...] [--native] [--ballast]

`build` makes MicroPython's qemu port out of the MicroPython source tree ($MPY_DIR, else
../shared/micropython beside the repository; never written to) into
build/qemu/<board>-<float>/firmware.elf, single-precision floats as boards have them, nothing
frozen; a build whose make line and source tree are unchanged is skipped. Boards:
MPS2_AN500 (Cortex-M7 with FPU, .mpy arch armv7emsp), MPS2_AN385 (Cortex-M3, armv7m), and
MICROBIT (Cortex-M0, armv6m; built only when asked: it has no ROMFS partition and no native
emitter, so the agent's image cannot be mounted on it; `check` shows that it boots).

`check` boots each built firmware and prints its machine, free heap and float precision. `run`
runs a script on a firmware with the agent's ROMFS image (broker_service.tools.romfs_image).

`heap` runs each use case's full default round (the service's round command and model encoding
for it) on the MPS2_AN500 firmware as a board does, from the ROMFS image, with or without the
compiled kernels (broker_service.tools.heap_probe says how). Per use case it prints the free heap
(bytes, after a collection) at boot, once the agent's modules are imported and once the agent
is built, then the lowest over the round's checkpoints (every sample, every publish) and where;
each with the largest free block after a slash. With --ballast also the most bytes, held in
1 KB pieces from the agent's build to the end of a round that still completes: the lowest free
heap with every transient inside a step counted (searched on short rounds, checked on the full
one).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker_service.tools import romfs_image
from broker_service.tools.romfs_image import ROOT, kit_dir

BUILD = ROOT / "build"
USE_CASES = ("sine", "omniglot", "kws", "occupancy")


@dataclass(frozen=True)
class Board:
    """One qemu board: its machine, CPU, .mpy architecture and ROMFS address (None: none)."""

    name: str
    machine: str
    cpu: str
    arch: str
    romfs: int | None
    qemu_args: tuple[str, ...] = ()
    default: bool = True
    notes: str = ""


BOARDS = {
    b.name: b
    for b in (
        Board("MPS2_AN500", "mps2-an500", "Cortex-M7", "armv7emsp", 0x60C00000),
        Board("MPS2_AN385", "mps2-an385", "Cortex-M3", "armv7m", 0x21000000),
        Board(
            "MICROBIT",
            "microbit",
            "Cortex-M0",
            "armv6m",
            None,
            ("-global", "nrf51-soc.flash-size=1048576", "-global", "nrf51-soc.sram-size=262144"),
            default=False,
            notes="no ROMFS partition and no native emitter: the agent's image cannot mount",
        ),
    )
}
FLOAT = "float"
"""Single-precision floats (MICROPY_FLOAT_IMPL=float), as nRF52840, STM32F4, RP2040 and ESP32
boards have; the qemu boards' own default is double on MPS2_AN500."""


class FirmwareError(RuntimeError):
    """The firmware cannot be built or run; the message says what to install or set."""


def board(name: str) -> Board:
    """The Board called `name`; FirmwareError listing the known ones."""
    if name not in BOARDS:
        raise FirmwareError("unknown board %r; known: %s" % (name, ", ".join(BOARDS)))
    return BOARDS[name]


def build_dir(b: Board) -> Path:
    """build/qemu/<board>-<float>/ for this repository."""
    return BUILD / "qemu" / ("%s-%s" % (b.name, FLOAT))


def firmware_path(b: Board) -> Path:
    """The board's firmware.elf (built or not)."""
    return build_dir(b) / "firmware.elf"


def make_args(b: Board) -> list[str]:
    """The make variables of a build (BUILD, the output folder, is added at run time)."""
    return ["BOARD=" + b.name, "FROZEN_MANIFEST=", "MICROPY_FLOAT_IMPL=" + FLOAT]


def check_toolchain() -> None:
    """FirmwareError naming the package to install when the ARM toolchain or make is missing."""
    if shutil.which("make") is None:
        raise FirmwareError("make not found: apt-get install make")
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        raise FirmwareError(
            "arm-none-eabi-gcc not found: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
        )
    libc = subprocess.run(
        [gcc, "-mthumb", "-mcpu=cortex-m3", "-print-file-name=libc.a"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not os.path.isabs(libc):
        raise FirmwareError("newlib not found: apt-get install libnewlib-arm-none-eabi")


def check_kit(mpy_dir: Path | None = None) -> Path:
    """The MicroPython source tree, or FirmwareError saying where it was looked for."""
    kit = mpy_dir or kit_dir()
    if not (kit / "ports" / "qemu" / "Makefile").is_file():
        raise FirmwareError(
            "MicroPython source tree not found at %s (ports/qemu/Makefile): set MPY_DIR to a "
            "MicroPython checkout" % kit
        )
    return kit


def kit_fingerprint(kit: Path) -> list:
    """What decides whether a build is current: the tree's file count and newest mtime."""
    count = 0
    newest = 0.0
    for folder, _, files in os.walk(kit):
        for name in files:
            count += 1
            newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime)
    return [count, newest]


def _stamp(b: Board, kit: Path) -> dict:
    return {"make": make_args(b), "kit": kit_fingerprint(kit)}


def is_current(b: Board, mpy_dir: Path | None = None) -> bool:
    """True when firmware.elf exists and was built with today's make line from today's tree."""
    stamp = build_dir(b) / "stamp.json"
    if not firmware_path(b).is_file() or not stamp.is_file():
        return False
    return json.loads(stamp.read_text()) == _stamp(b, check_kit(mpy_dir))


def build(
    name: str = "MPS2_AN500",
    jobs: int = 2,
    force: bool = False,
    log: Callable[[str], None] = print,
    mpy_dir: Path | None = None,
) -> Path:
    """Build (or find current) the board's firmware; returns firmware.elf. Concurrent callers
    wait for each other (a lock in the build folder)."""
    b = board(name)
    kit = check_kit(mpy_dir)
    out = build_dir(b)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and is_current(b, kit):
            log("firmware %s-%s: current (%s)" % (b.name, FLOAT, _rel(firmware_path(b))))
            return firmware_path(b)
        check_toolchain()
        _make(b, kit, out, jobs, log)
        (out / "stamp.json").write_text(json.dumps(_stamp(b, kit)))
    return firmware_path(b)


def _make(b: Board, kit: Path, out: Path, jobs: int, log: Callable[[str], None]) -> None:
    """Run the qemu port's make into `out`; its output goes to out/make.log."""
    cmd = ["make", "-C", str(kit / "ports" / "qemu"), *make_args(b), "BUILD=" + str(out)]
    cmd.append("-j%d" % jobs)
    log("firmware %s-%s: building (%s, %s)..." % (b.name, FLOAT, b.cpu, " ".join(make_args(b))))
    start = time.monotonic()
    with open(out / "make.log", "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not firmware_path(b).is_file():
        tail = (out / "make.log").read_text().strip().splitlines()[-5:]
        raise FirmwareError(
            "building %s failed (see %s):\n%s" % (b.name, _rel(out / "make.log"), "\n".join(tail))
        )
    log(
        "firmware %s-%s: built in %.0f s (%s)"
        % (b.name, FLOAT, time.monotonic() - start, _rel(firmware_path(b)))
    )


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def native_module(b: Board) -> Path | None:
    """The agent's native kernels for the board's arch (build/native/<arch>/tmf_kernels.mpy),
    when built."""
    path = BUILD / "native" / b.arch / "tmf_kernels.mpy"
    return path if path.is_file() else None


def image(
    name: str, extra: dict[str, str | bytes | Path] | None = None, native: bool = False
) -> Path:
    """The board's ROMFS image (build/romfs/<board>/): the agent, umqtt.simple, the stand-in
    socket, `extra`, and with `native` the native kernels (FirmwareError when not built) and
    the agent's Python kernels without `@micropython.native`, as a bundle ships them: they are
    only the fallback then, and their machine code would take 7 KB of heap."""
    b = board(name)
    files = dict(extra or {})
    if native:
        kernels = native_module(b)
        if kernels is None:
            raise FirmwareError(
                "native kernels not built: build/native/%s/tmf_kernels.mpy is missing" % b.arch
            )
        files["tmf_kernels.mpy"] = kernels
    return romfs_image.write_image(BUILD / "romfs" / b.name, b.arch, files, plain=native)


def run(
    name: str,
    script: str,
    image_path: Path | None = None,
    timeout: float = 120.0,
    on_line: Callable[[str], None] | None = None,
) -> list[str]:
    """Run `script` on the board's built firmware (with `image_path` at its ROMFS address);
    the lines printed (romfs_image.run_script)."""
    b = board(name)
    elf = firmware_path(b)
    if not elf.is_file():
        raise FirmwareError(
            "%s not built: python -m broker_service.tools.firmware build --board %s"
            % (_rel(elf), b.name)
        )
    cmd = romfs_image.qemu_command(elf, b.machine, image_path, b.romfs, b.qemu_args)
    return romfs_image.run_script(cmd, script, timeout, on_line)


CHECK_SCRIPT = """import gc, sys
gc.collect()
print("machine", sys.implementation._machine)
print("heap", gc.mem_free())
print("single", 1.0 + 1e-10 == 1.0)
"""


def check(name: str) -> list[str]:
    """Boot the board's firmware and report its machine, free heap and float precision."""
    return run(name, CHECK_SCRIPT, timeout=30.0)


# -- heap --


def round_command(use_case: str) -> tuple[dict, str]:
    """The service's round command for `use_case` (its default settings, TinyMetaFed, as the
    wire carries it) and the value encoding of the model it sends."""
    from broker_service.core.hyperparams import settings_for
    from broker_service.core.strategies import ALGORITHMS, wire_command

    strategy = ALGORITHMS["tinymetafed"](settings_for(use_case))
    return wire_command(strategy.round_command(1, 1)), strategy.model_values()


def heap_script(use_case: str, command: dict, model_values: str, ballast: int = 0) -> str:
    """The raw-REPL script that runs heap_probe.main on the firmware."""
    return "import heap_probe\nheap_probe.main(%r, %r, %r, %d)\n" % (
        use_case,
        json.dumps(command),
        model_values,
        ballast,
    )


@dataclass
class HeapFigures:
    """One use case's heap through its round (bytes free; None: not measured)."""

    use_case: str
    stages: dict[str, int]
    blocks: dict[str, int]
    low: int
    low_at: str
    low_block: int
    ballast: int | None = None

    def line(self) -> str:
        """One printed line of the figures."""
        s = self.stages
        text = "%-9s boot %6d  imported %6d  built %6d/%-6d lowest %6d/%-6d (%s)" % (
            self.use_case,
            s.get("boot", -1),
            s.get("imported", -1),
            s.get("built", -1),
            self.blocks.get("built", -1),
            self.low,
            self.low_block,
            self.low_at,
        )
        if self.ballast is not None:
            text += "  held through the round %6d" % self.ballast
        return text


def parse_heap(use_case: str, lines: list[str]) -> HeapFigures:
    """HeapFigures from heap_probe's output lines."""
    stages: dict[str, int] = {}
    blocks: dict[str, int] = {}
    block = 0
    low = None
    low_at = ""
    for line in lines:
        parts = line.split()
        if parts[:1] == ["heap"] and len(parts) == 4:
            stages.setdefault(parts[1], int(parts[2]))
            blocks.setdefault(parts[1], int(parts[3]))
        elif parts[:1] == ["done"]:
            low, low_at, block = int(parts[1]), parts[2], int(parts[3])
    if low is None:
        raise FirmwareError("%s: the round did not finish: %s" % (use_case, lines[-3:]))
    return HeapFigures(use_case, stages, blocks, low, low_at, block)


def probe_image(name: str, native: bool, wake: bool = False) -> Path:
    """The ROMFS image with the heap probe beside the agent (`wake`: the wake probe too, and
    each use case's retained model and work orders, wake_files)."""
    here = Path(__file__).parent
    extra: dict[str, str | bytes | Path] = {"heap_probe.py": here / "heap_probe.py"}
    if wake:
        extra["wake_probe.py"] = here / "wake_probe.py"
        for use_case in USE_CASES:
            for file, data in wake_files(use_case).items():
                extra["wake/%s/%s" % (use_case, file)] = data
    return image(name, extra, native)


def heap_round(
    use_case: str,
    img: Path,
    name: str = "MPS2_AN500",
    ballast: int = 0,
    samples: tuple[int, int] | None = None,
    timeout: float = 900,
) -> tuple[bool, list[str]]:
    """Run the probe once, `samples` (recon, adapt) replacing the command's counts; (finished,
    lines). A MemoryError in the round is `finished` False."""
    command, values = round_command(use_case)
    if samples is not None:
        command.update(recon_samples=samples[0], adapt_samples=samples[1])
    lines = run(name, heap_script(use_case, command, values, ballast), img, timeout)
    return not any(line.startswith("failed") for line in lines), lines


BALLAST_SAMPLES = (2, 2)
"""Samples of the rounds that search the largest ballast: every step allocates alike, so a
short round has a full round's low point (the found ballast is then checked on a full round)."""


def largest_ballast(
    use_case: str, img: Path, high: int, name: str = "MPS2_AN500", step: int = 1024
) -> int:
    """The most bytes (a multiple of `step`, at most `high`) held through a whole round that
    still completes: the lowest free heap with every transient counted. Searched on short
    rounds, then checked (and lowered while it fails) on the full round."""
    lo, hi = 0, high // step
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if heap_round(use_case, img, name, mid * step, BALLAST_SAMPLES)[0]:
            lo = mid
        else:
            hi = mid - 1
    while lo > 0 and not heap_round(use_case, img, name, lo * step)[0]:
        lo -= 1
    return lo * step


WAKE_KEY = "5a" * 32
"""The key of the keyed wake (a test key: 32 bytes)."""
WAKE_EPOCH = 7
"""The service session epoch of the keyed wake's work orders."""
WAKE_DEVICE = "heap-1"


def wake_model(use_case: str, version: int) -> bytes:
    """The MODEL payload of version `version` as heap_probe.model_payload makes it (the same
    values), encoded as the service sends it."""
    from array import array

    from device_agent import codec
    from device_agent.model import Plan
    from device_agent.specs import spec_for

    n = Plan(spec_for(use_case)).n_global
    values = array("f", [0.05 * ((i % 7) - 3) for i in range(n)])
    enc = codec.value_encoding(round_command(use_case)[1])
    return bytes(codec.encode(codec.KIND_MODEL, n, None, values, version, version, 0, enc))


def wake_order(use_case: str, receipt: int, keyed: bool, model: bytes) -> bytes:
    """The retained work order of version 2 the asynchronous service publishes for the device
    (its round command with `async`, `want` and the receipt of the device's update of version
    `receipt`), signed as broker_service.server.signing.DownlinkSigner signs (`keyed`)."""
    from broker_service.core.hyperparams import settings_for
    from broker_service.core.strategies import ALGORITHMS, wire_command
    from broker_service.server.signing import DownlinkSigner

    strategy = ALGORITHMS["tinymetafed"](settings_for(use_case))
    order = wire_command(strategy.round_command(2, version=2))
    order.update({"async": True, "want": True, "receipt": receipt})
    keys = {WAKE_DEVICE: bytes.fromhex(WAKE_KEY)} if keyed else None
    return DownlinkSigner(keys, WAKE_EPOCH if keyed else 0).command(WAKE_DEVICE, order, 2, 2, model)


def wake_files(use_case: str) -> dict[str, bytes]:
    """The files of a use case's wake in the probe image: the state's model (version 1), the
    retained model (version 2), the work order (receipt 1) and its republication once the update
    of version 2 is journalled (receipt 2); the orders signed for the keyed device and plain
    (`plain-order.bin`, `plain-receipt.bin`)."""
    model = wake_model(use_case, 2)
    files = {"model1.bin": wake_model(use_case, 1), "model.bin": model}
    for prefix, signed in (("", True), ("plain-", False)):
        files[prefix + "order.bin"] = wake_order(use_case, 1, signed, model)
        files[prefix + "receipt.bin"] = wake_order(use_case, 2, signed, model)
    return files


def wake_need(use_case: str) -> int:
    """The samples the wake's round streams (device_agent.sleepy.needed_samples)."""
    from device_agent.model import Plan
    from device_agent.round import round_settings
    from device_agent.sleepy import needed_samples
    from device_agent.specs import spec_for

    command, _ = round_command(use_case)
    return needed_samples(Plan(spec_for(use_case)), round_settings(command))


def wake_script(use_case: str, keyed: bool) -> str:
    """The raw-REPL script that runs wake_probe.main on the firmware."""
    need = wake_need(use_case)
    key = (", %r, %d" % (WAKE_KEY, WAKE_EPOCH)) if keyed else ""
    return "import wake_probe\nwake_probe.main(%r, %d, %d%s)\n" % (
        use_case,
        need,
        max(32, need),
        key,
    )


def heap_wake(
    use_case: str, img: Path, name: str = "MPS2_AN500", keyed: bool = True, timeout: float = 900
) -> list[str]:
    """Run the wake probe once; its lines."""
    return run(name, wake_script(use_case, keyed), img, timeout)


HEAP_LEGEND = (
    "free heap in bytes / largest free block, after a collection; lowest: over the round's "
    "checkpoints; held: bytes held through a whole round that completes (1 KB pieces)"
)


def heap(
    use_cases: tuple[str, ...] = USE_CASES,
    native: bool = False,
    ballast: bool = False,
    name: str = "MPS2_AN500",
    log: Callable[[str], None] = print,
    wake: bool = False,
    keyed: bool = True,
) -> list[HeapFigures]:
    """Each use case's heap figures on the board's firmware (built if needed): through its
    round, or (`wake`) through a sleeping device's training wake (`keyed`: with a key)."""
    build(name, log=log)
    img = probe_image(name, native, wake)
    what = "training wake, %s" % ("keyed" if keyed else "unkeyed") if wake else "round"
    kernels = "compiled" if native else "Python"
    log("%s, %s kernels, %s: %s" % (name, kernels, what, HEAP_LEGEND))
    figures = []
    for use_case in use_cases:
        if wake:
            fig = parse_heap(use_case, heap_wake(use_case, img, name, keyed))
            log(fig.line())
            figures.append(fig)
            continue
        ok, lines = heap_round(use_case, img, name)
        fig = parse_heap(use_case, lines)
        if ballast:
            fig.ballast = largest_ballast(use_case, img, fig.low, name)
        log(fig.line())
        figures.append(fig)
    return figures


# -- command line --


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (FirmwareError, romfs_image.ImageError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    except romfs_image.ScriptError as exc:
        print("\n".join(exc.lines + [exc.traceback]), file=sys.stderr)
        return 1


def _boards(args: argparse.Namespace) -> list[str]:
    if args.all:
        return list(BOARDS)
    return args.board or [b.name for b in BOARDS.values() if b.default]


def _cmd_build(args: argparse.Namespace) -> int:
    for name in _boards(args):
        build(name, args.jobs, args.force)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    for name in _boards(args):
        print("%s: %s" % (name, "; ".join(check(name))))
        if board(name).notes:
            print("%s: %s" % (name, board(name).notes))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    name = args.board[0] if args.board else "MPS2_AN500"
    build(name)
    extra: dict[str, str | bytes | Path] = {Path(p).name: Path(p) for p in args.extra}
    img = image(name, extra, args.native) if board(name).romfs is not None else None
    run(name, Path(args.script).read_text(), img, args.timeout, print)
    return 0


def _cmd_heap(args: argparse.Namespace) -> int:
    use_cases = tuple(args.use_case or USE_CASES)
    figures = heap(use_cases, args.native, args.ballast, wake=args.wake, keyed=not args.unkeyed)
    if args.json:
        print(json.dumps([f.__dict__ for f in figures]))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m broker_service.tools.firmware")
    sub = p.add_subparsers(required=True)
    for cmd, func, what in (
        ("build", _cmd_build, "build the qemu firmware (skipped when current)"),
        ("check", _cmd_check, "boot each firmware: machine, free heap, float precision"),
        ("run", _cmd_run, "run a script on a firmware with the agent's ROMFS image"),
        ("heap", _cmd_heap, "each use case's free heap through a full round (MPS2_AN500)"),
    ):
        s = sub.add_parser(cmd, help=what)
        s.set_defaults(func=func)
        if cmd != "heap":
            s.add_argument("--board", action="append", choices=list(BOARDS))
        if cmd in ("build", "check"):
            s.add_argument("--all", action="store_true", help="every board, MICROBIT included")
        if cmd == "build":
            s.add_argument("--jobs", type=int, default=2)
            s.add_argument("--force", action="store_true", help="run make even when current")
        if cmd == "run":
            s.add_argument("script")
            s.add_argument("--extra", action="append", default=[], help="a file for /rom")
            s.add_argument("--timeout", type=float, default=120.0)
        if cmd in ("run", "heap"):
            s.add_argument("--native", action="store_true", help="add the native kernels")
        if cmd == "heap":
            s.add_argument("--use-case", action="append", choices=USE_CASES)
            s.add_argument(
                "--ballast", action="store_true", help="also the largest block held through it"
            )
            s.add_argument(
                "--wake", action="store_true", help="a sleeping device's training wake instead"
            )
            s.add_argument("--unkeyed", action="store_true", help="--wake: a device without a key")
            s.add_argument("--json", action="store_true")
    return p


if __name__ == "__main__":
    sys.exit(main())
