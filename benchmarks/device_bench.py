"""The agent's training on microcontrollers: its speed under the unix-port MicroPython, and its
instructions on MicroPython firmware for Cortex-M cores under QEMU, from which
device_agent/energy.py prices a round on each board.

    .venv/bin/python -m benchmarks.device_bench [--repeat N]       # device-bench.json
    .venv/bin/python -m benchmarks.device_bench --cortexm          # device-cortexm.json
    .venv/bin/python -m benchmarks.device_bench --cortexm --reprice

Unix port (benchmarks/results/device-bench.json): `device_agent.bench` for every use case under
the unix-port micropython (256 KB heap) with the agent as it ships (its @micropython.native
kernels), with those decorators stripped (plain), with the compiled kernels (tmf_kernels for
x64 on MICROPYPATH, built by broker_service.tools.native_build when it is not current) and under
CPython; best of `--repeat` runs.

Cortex-M firmware (benchmarks/results/device-cortexm.json; broker_service.tools.firmware builds
the firmware, single-precision floats, and runs a script on it under `qemu-system-arm -icount
shift=0`, whose clock advances one virtual nanosecond per executed instruction). For every
TARGETS entry (a firmware and the kernels in its ROMFS image) and every use case,
benchmarks/device_probe.py times a whole round (the bench's command: 10 reconstruction and 20
adaptation samples; the synthetic samples' drawing left out) and each of its steps, and each
layer's kernels; the microseconds are converted to instructions with the firmware's measured
instructions per microsecond (`calibrate`: 1000 on the MPS2 boards; the MICROBIT firmware's
clock runs at 16/25 of that, its SysTick being 16 MHz where the port assumes 25 MHz). Then one
adaptation step of each use case (of at most TRACE_LIMIT instructions) runs again with QEMU
logging every executed instruction (`-singlestep -d in_asm,exec,nochain`), and its instruction
mix, branches taken or not, is priced by the Cortex-M4's or Cortex-M0+'s published timings:
cycles per instruction. From the counts: the instructions per MAC of each kernel (fitted on the
four rounds) and the CPI of each core, which device_agent/energy.py holds; then every board's
round time and energy, from the rounds' measured instructions and from energy.py's MAC model,
and the goals; last, each use case's free heap through its full round on the Cortex-M7 firmware
with either kernel set, and through a sleeping device's training wake
(broker_service.tools.firmware heap [--wake]: `heap` in the file). `--use-case` and `--target`
measure a part (into `--out`), `--no-trace` skips the tracing and `--no-heap` the heap
(`--cortexm --no-trace --no-heap --target m7-native --use-case kws --out F` counts one use
case's steps and round in about a minute, for a quick look while changing the kernels);
`--heap-only` measures the heap figures alone into the file (after a change to what the agent
allocates that leaves its instructions alone); `--reprice` measures nothing: it prices the
counts in the file again (after a change to device_agent/energy.py).
The firmware runs take about 20 minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from broker_service.observe.provenance import load_average, provenance, write_results
from broker_service.sim.demo import VERSION_CODE, find_micropython
from broker_service.tools import firmware, native_build, romfs_image
from broker_service.tools.bundle import strip_native
from device_agent import bench, energy
from device_agent.model import Plan
from device_agent.specs import spec_for

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
USE_CASES = ["sine", "omniglot", "kws", "occupancy"]
HEAP = "heapsize=256K"
PROBE = Path(__file__).with_name("device_probe.py")

# -- the unix port --


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> dict:
    out = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out)


def best_of(cmd: list[str], cwd: Path, repeat: int, env: dict | None = None) -> dict:
    """The run with the lowest step_ms of `repeat` runs (least disturbed by other load)."""
    return min((run(cmd, cwd, env) for _ in range(repeat)), key=lambda r: r["step_ms"])


def plain_copy(folder: Path) -> Path:
    target = folder / "device_agent"
    target.mkdir()
    for module in (ROOT / "device_agent").glob("*.py"):
        (target / module.name).write_text(strip_native(module.read_text()))
    return folder


def measure_unix(mp: list[str], repeat: int) -> list[dict]:
    """Every use case as shipped, plain, with the compiled kernels and under CPython."""
    results = []
    try:
        x64 = native_build.build("x64", say=print)
        compiled_env: dict | None = {**os.environ, "MICROPYPATH": "%s:" % x64.parent}
    except native_build.NativeBuildError as exc:
        print("no compiled kernels for x64: %s" % exc)
        compiled_env = None
    with tempfile.TemporaryDirectory() as tmp:
        plain = plain_copy(Path(tmp))
        for use_case in USE_CASES:
            shipped = best_of(mp + [use_case, "--python"], ROOT, repeat)
            stripped = best_of(mp + [use_case, "--python"], plain, repeat)
            cpython = best_of([sys.executable, "-m", "device_agent.bench", use_case], ROOT, repeat)
            shipped["step_ms_plain"] = stripped["step_ms"]
            shipped["native_speedup"] = stripped["step_ms"] / shipped["step_ms"]
            shipped["step_ms_cpython"] = cpython["step_ms"]
            shipped["step_ms_compiled"] = None
            if compiled_env is not None:
                compiled = best_of(mp + [use_case], ROOT, repeat, compiled_env)
                if compiled["kernels"] == "native":
                    shipped["step_ms_compiled"] = compiled["step_ms"]
            results.append(shipped)
            print(
                "%-10s params %5d  MACs/sample %7d  step %7.2f ms (plain %7.2f, compiled %s; "
                "CPython %7.2f)  heap %6d B  payload %4d B"
                % (
                    use_case,
                    shipped["params"],
                    shipped["macs_per_sample"],
                    shipped["step_ms"],
                    shipped["step_ms_plain"],
                    "%.3f" % shipped["step_ms_compiled"] if shipped["step_ms_compiled"] else "-",
                    shipped["step_ms_cpython"],
                    shipped["peak_heap_bytes"],
                    shipped["payload_bytes"],
                )
            )
    return results


def unix(repeat: int) -> dict:
    """The unix-port document."""
    exe = find_micropython() or "micropython"
    results = measure_unix([exe, "-X", HEAP, "-m", "device_agent.bench"], repeat)
    version = subprocess.run([exe, "-c", VERSION_CODE], capture_output=True, text=True).stdout
    return {
        "runtime": "micropython %s unix port, -X %s" % (version.strip(), HEAP),
        "repeat": repeat,
        "results": results,
    }


# -- the Cortex-M firmware --


@dataclass(frozen=True)
class Target:
    """A firmware and what its image holds: `kernel` as energy.py names it, `module` the
    architecture of the tmf_kernels build in the image (None: the pure-Python kernels), `plain`
    the pure-Python kernels as bytecode, their @micropython.native decorators stripped (an image
    with a module has them stripped too, as a bundle ships them), `trace` whether its steps
    are priced instruction by instruction, `core` by which core's timings."""

    name: str
    board: str
    kernel: str
    module: str | None
    about: str
    plain: bool = False
    trace: bool = False
    core: str | None = None


TARGETS = (
    Target(
        "m7-python",
        "MPS2_AN500",
        "micropython",
        None,
        "Cortex-M7 with FPU, pure-Python kernels",
        trace=True,
        core="cortex-m4",
    ),
    Target(
        "m7-native",
        "MPS2_AN500",
        "compiled",
        "armv7emsp",
        "Cortex-M7 with FPU, tmf_kernels armv7emsp (built for the Cortex-M4F)",
        trace=True,
        core="cortex-m4",
    ),
    Target("m3-python", "MPS2_AN385", "micropython", None, "Cortex-M3, pure-Python kernels"),
    Target(
        "m3-plain",
        "MPS2_AN385",
        "micropython",
        None,
        "Cortex-M3, pure-Python kernels as bytecode (no @micropython.native)",
        plain=True,
    ),
    Target("m3-native", "MPS2_AN385", "compiled", "armv7m", "Cortex-M3, tmf_kernels armv7m"),
    Target(
        "m3-armv6m",
        "MPS2_AN385",
        "compiled",
        "armv6m",
        "Cortex-M3, tmf_kernels armv6m (Thumb-1, libgcc soft float: a Cortex-M0+'s kernels)",
        trace=True,
        core="cortex-m0+",
    ),
    Target(
        "m0-plain",
        "MICROBIT",
        "micropython",
        None,
        "Cortex-M0, pure-Python kernels as bytecode (the firmware has no native emitter)",
        plain=True,
        trace=True,
        core="cortex-m0+",
    ),
)
"""Every firmware and kernel set measured, in the tables' order."""

ISA_TARGETS = {
    "armv7em": {"micropython": "m7-python", "compiled": "m7-native"},
    "armv6m": {"micropython": "m0-plain", "compiled": "m3-armv6m"},
}
"""The targets whose counts stand for each instruction set of device_agent/energy.py."""

TRACE_LIMIT = 25e6
"""Instructions of the largest adaptation step traced (tracing runs at a few million a second)."""
CALIBRATION_LOOPS = 20000
"""Iterations of the empty loop that measures a firmware's instructions per microsecond."""
MICROBIT_ROMFS = 0x80000
"""Where the MICROBIT image goes: its 1 MB flash (as firmware.BOARDS sizes it) past the
firmware; the probe mounts it itself (the board has no ROMFS partition)."""
TIMEOUT = 3600.0


def by_name() -> dict[str, Target]:
    return {t.name: t for t in TARGETS}


def target_image(target: Target) -> tuple[Path, int, str]:
    """The target's ROMFS image (the agent, umqtt.simple, the probe and, for a target with
    compiled kernels, their build for its `module` architecture, the agent's Python kernels then
    without @micropython.native as a bundle ships them beside the module): (path, address it
    loads at, the script lines that mount it where the firmware does not)."""
    board = firmware.board(target.board)
    extra: dict[str, str | bytes | Path] = {"device_probe.py": PROBE}
    if target.module is not None:
        extra["tmf_kernels.mpy"] = native_build.build(target.module, say=lambda line: None)
    plain = target.plain or target.module is not None
    arch = None if plain else board.arch  # bytecode alone: loads on a firmware without native code
    path = romfs_image.write_image(firmware.BUILD / "romfs" / board.name, arch, extra, plain)
    if board.romfs is not None:
        return path, board.romfs, ""
    mount = (
        "import sys, uctypes, vfs\n"
        "vfs.mount(vfs.VfsRom(uctypes.bytearray_at(%d, %d)), '/rom')\n"
        "sys.path.insert(0, '/rom')\n" % (MICROBIT_ROMFS, path.stat().st_size)
    )
    return path, MICROBIT_ROMFS, mount


def qemu(target: Target, extra_args: tuple[str, ...] = ()) -> tuple[list[str], str]:
    """The QEMU command line of the target (its image loaded) and the script prelude."""
    board = firmware.board(target.board)
    firmware.build(board.name, log=lambda line: None)
    image, address, prelude = target_image(target)
    cmd = romfs_image.qemu_command(
        firmware.firmware_path(board),
        board.machine,
        image,
        address,
        (*board.qemu_args, *extra_args),
    )
    return cmd, prelude


def probe_call(call: str) -> str:
    return "import device_probe\ndevice_probe.%s\n" % call


def run_probe(target: Target, use_case: str, command: dict, log) -> dict:
    """The probe's `main` on the target for one use case: its result document."""
    cmd, prelude = qemu(target)
    script = prelude + probe_call("main(%r, %r)" % (use_case, json.dumps(command)))
    start = time.monotonic()

    def progress(line: str) -> None:
        if line.endswith("done"):
            log("  %-9s %-9s %s (%.0f s)" % (target.name, use_case, line, time.monotonic() - start))

    lines = romfs_image.run_script(cmd, script, TIMEOUT, progress)
    found = [line for line in lines if line.startswith("result ")]
    if not found:
        raise firmware.FirmwareError("%s %s: no result in %s" % (target.name, use_case, lines[-3:]))
    return json.loads(found[-1][len("result ") :])


# -- the instruction tracer --


@dataclass
class Trace:
    """What a traced window executed: each address's executions and taken branches, and what
    the log said is at each address (size, mnemonic, operands) and which symbol holds it."""

    execs: Counter
    taken: Counter
    asm: dict
    symbols: dict
    markers: int = 0

    @property
    def instructions(self) -> int:
        return sum(self.execs.values())


def marker_address(elf: Path) -> int:
    """Where the firmware's machine_mem_subscr starts (the probe's marker)."""
    from elftools.elf.elffile import ELFFile

    with open(elf, "rb") as f:
        symbols = ELFFile(f).get_section_by_name(".symtab")
        for symbol in symbols.iter_symbols():
            if symbol.name == "machine_mem_subscr":
                return symbol["st_value"] & ~1
    raise firmware.FirmwareError("%s has no machine_mem_subscr" % elf)


HEX = frozenset(b"0123456789abcdef")


def read_log(path: str, mark: int, trace: Trace) -> None:
    """Read QEMU's `in_asm,exec` log (a FIFO) into `trace`: every instruction's disassembly,
    and, between the first and the second entry into the marker at `mark`, each executed
    address, and a taken branch wherever the next address is not the following instruction."""
    key = b"/%08x/" % mark
    inside = False
    prev = None
    execs, taken, asm, symbols = trace.execs, trace.taken, trace.asm, trace.symbols
    with open(path, "rb", buffering=1 << 20) as log:
        for line in log:
            first = line[:1]
            if first == b"T":  # Trace 0: 0x... [cs_base/pc/flags/cflags] symbol
                marker = key in line
                if not (inside or marker):
                    continue
                at = line.index(b"[")
                pc = int(line[at + 10 : at + 18], 16)
                if prev is not None and pc != prev + asm.get(prev, (2,))[0]:
                    taken[prev] += 1
                if marker:
                    trace.markers += 1
                    inside = trace.markers == 1
                    prev = None
                if not inside:
                    continue
                execs[pc] += 1
                if pc not in symbols:
                    symbols[pc] = line[line.index(b"]") + 2 : -1].decode()
                prev = pc
            elif first == b"0" and line[1:2] == b"x":  # 0x000012ab:  f8d3 2000  ldr.w r2, [r3]
                parts = line[12:].split()
                if len(parts) > 1 and len(parts[1]) == 4 and set(parts[1]) <= HEX:
                    size, words = 4, parts[2:]
                else:
                    size, words = 2, parts[1:]
                asm[int(line[2:10], 16)] = (
                    size,
                    words[0].decode() if words else "?",
                    b" ".join(words[1:]).decode(),
                )


def trace_window(target: Target, call: str) -> tuple[Trace, list[str]]:
    """Run a probe call that marks a window on the target with every instruction logged;
    returns the window's Trace and the lines the script printed."""
    args = ("-singlestep", "-d", "in_asm,exec,nochain", "-D")
    trace = Trace(Counter(), Counter(), {}, {})
    elf = firmware.firmware_path(firmware.board(target.board))
    with tempfile.TemporaryDirectory() as tmp:
        fifo = os.path.join(tmp, "log")
        os.mkfifo(fifo)
        cmd, prelude = qemu(target, (*args, fifo))
        reader = threading.Thread(target=read_log, args=(fifo, marker_address(elf), trace))
        reader.daemon = True
        reader.start()
        try:
            lines = romfs_image.run_script(cmd, prelude + probe_call(call), TIMEOUT)
        finally:
            reader.join(60)
    if trace.markers < 2:
        raise firmware.FirmwareError("%s: the traced window did not close" % target.name)
    return trace, lines


CONDITIONS = ("eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt")
CONDITIONS += ("gt", "le", "al")
PLAIN = frozenset(
    ("b", "bl", "blx", "bx", "cbz", "cbnz", "bic", "bics", "teq", "tst", "vcmp", "vcmpe")
    + ("mls", "vmls", "vnmls", "vfms", "vfnms", "umlal", "smlal")
)
"""Mnemonics that end like a condition code but are not conditional."""


def base_mnemonic(mnemonic: str) -> str:
    """A disassembler mnemonic without its width or type suffix (.w, .f32) and condition."""
    m = mnemonic.split(".")[0]
    if m in PLAIN:
        return m
    for cond in CONDITIONS:
        if m.endswith(cond) and len(m) > len(cond):
            head = m[: -len(cond)]
            if head == "b" or head in TIMED or head.rstrip("s") in TIMED:
                return head
    return m


TIMED = frozenset(
    ("mov", "movs", "mvn", "add", "adds", "adc", "sub", "subs", "sbc", "rsb", "and", "orr", "eor")
    + ("orn", "lsl", "lsr", "asr", "ror", "cmp", "cmn", "ldr", "ldrb", "ldrh", "ldrsb", "ldrsh")
    + ("ldrd", "str", "strb", "strh", "strd", "ldm", "stm", "push", "pop", "mul", "muls", "mla")
    + ("umull", "smull", "vmov", "vadd", "vsub", "vmul", "vdiv", "vmrs", "vldr", "vstr", "vcvt")
    + ("vneg", "vabs", "vsqrt", "ubfx", "sbfx", "uxtb", "uxth", "sxtb", "sxth", "clz", "rev")
    + ("nop", "udiv", "sdiv")
)
"""Mnemonics a condition code may follow (in an IT block)."""


def _registers(operands: str) -> int:
    """Registers in a {list} (a d register counts two words)."""
    if "{" not in operands:
        return 1
    inside = operands[operands.index("{") + 1 : operands.index("}")]
    regs = [r.strip() for r in inside.split(",")]
    count = 0
    for r in regs:
        if "-" in r:
            lo, hi = r.split("-")
            count += int(hi.strip()[1:]) - int(lo.strip()[1:]) + 1
        else:
            count += 1
    return count * (2 if regs[0].startswith("d") else 1)


def _is_single_load_store(mnemonic: str) -> bool:
    m = base_mnemonic(mnemonic)
    return (m.startswith("ldr") or m.startswith("str")) and m not in ("ldrd", "strd")


def m4_cycles(mnemonic: str, operands: str, taken: bool, pipelined: bool, refill: float) -> float:
    """Cortex-M4 cycles of one instruction (Cortex-M4 TRM, tables 3-1 and 7-1)."""
    m = base_mnemonic(mnemonic)
    to_pc = "pc" in operands.split("}")[0] if "{" in operands else operands.startswith("pc")
    if m == "b" or m in ("cbz", "cbnz"):
        conditional = m != "b" or mnemonic.split(".")[0] != "b"
        return 1 + refill if taken or not conditional else 1
    if m in ("bl", "blx", "bx"):
        return 1 + refill
    if m in ("tbb", "tbh"):
        return 2 + refill
    if m in ("push", "stm", "stmia", "stmdb", "stmea", "stmfd"):
        return 1 + _registers(operands)
    if m in ("pop", "ldm", "ldmia", "ldmdb", "ldmfd"):
        return 1 + _registers(operands) + (refill if to_pc else 0)
    if m in ("vpush", "vpop", "vldmia", "vldmdb", "vstmia", "vstmdb", "vldm", "vstm"):
        return 1 + _registers(operands)
    if m in ("ldrd", "strd"):
        return 3
    if m.startswith("ldr") or m.startswith("str"):
        if m.startswith("ldr") and to_pc:
            return 2 + refill
        return 1 if pipelined else 2
    if m in ("vldr", "vstr"):
        return 2 if operands.startswith("s") else 3
    if m in ("vdiv", "vsqrt"):
        return 14
    if m in ("vmla", "vmls", "vnmla", "vnmls", "vfma", "vfms", "vfnma", "vfnms"):
        return 3
    if m in ("sdiv", "udiv"):
        return 7
    if m in ("mov", "add") and to_pc:
        return 1 + refill
    return 1


def m0plus_cycles(
    mnemonic: str, operands: str, taken: bool, pipelined: bool, refill: float
) -> float:
    """Cortex-M0+ cycles of one instruction (Cortex-M0+ TRM, table 3-1, N the registers of the
    list besides PC; a Thumb-2 instruction of the Cortex-M3 firmware's glue is priced as its
    Thumb-1 counterpart)."""
    m = base_mnemonic(mnemonic)
    to_pc = "pc" in operands.split("}")[0] if "{" in operands else operands.startswith("pc")
    if m == "b" or m in ("cbz", "cbnz"):
        conditional = m != "b" or mnemonic.split(".")[0] != "b"
        return 2 if taken or not conditional else 1
    if m == "bl":
        return 3
    if m in ("bx", "blx", "tbb", "tbh"):
        return 2
    if m in ("push", "stm", "stmia", "stmdb"):
        return 1 + _registers(operands)
    if m in ("pop", "ldm", "ldmia", "ldmdb"):
        return 2 + _registers(operands) if to_pc else 1 + _registers(operands)  # PC: 3 + N
    if m in ("ldrd", "strd"):
        return 4
    if m.startswith("ldr") or m.startswith("str"):
        return 2
    if m in ("mov", "add") and to_pc:
        return 2
    if m in ("sdiv", "udiv"):
        return 7
    return 1


CORES = {"cortex-m4": m4_cycles, "cortex-m0+": m0plus_cycles}
REFILLS = (1.0, 2.0, 3.0)
"""The Cortex-M4's pipeline refill P (1 to 3 cycles); 2 is the figure used."""


def cycles(trace: Trace, core: str, refill: float = 2.0) -> float:
    """The window's cycles at zero wait states by `core`'s timings."""
    price = CORES[core]
    total = 0.0
    for pc, count in trace.execs.items():
        size, mnemonic, operands = trace.asm.get(pc, (2, "?", ""))
        before = trace.asm.get(pc - 2) or trace.asm.get(pc - 4)
        pipelined = before is not None and _is_single_load_store(before[1])
        taken = trace.taken.get(pc, 0)
        total += taken * price(mnemonic, operands, True, pipelined, refill)
        total += (count - taken) * price(mnemonic, operands, False, pipelined, refill)
    return total


CLASSES = ("load", "store", "branch", "float", "other")


def instruction_class(mnemonic: str) -> str:
    m = base_mnemonic(mnemonic)
    if m.startswith("v") and m not in ("vldr", "vstr", "vpush", "vpop") and "ldm" not in m:
        return "float" if "stm" not in m else "store"
    if m.startswith("ldr") or m.startswith("ldm") or m in ("pop", "vldr", "vpop"):
        return "load"
    if m.startswith("str") or m.startswith("stm") or m in ("push", "vstr", "vpush"):
        return "store"
    if m in ("b", "bl", "blx", "bx", "cbz", "cbnz", "tbb", "tbh"):
        return "branch"
    return "other"


def summarise(trace: Trace, target: Target, use_case: str, kind: str) -> dict:
    """A traced window for the JSON: instructions, cycles by the target's core at P = 1, 2, 3,
    the instruction classes, taken branches and the symbols that executed the most."""
    classes: Counter = Counter()
    symbols: Counter = Counter()
    for pc, count in trace.execs.items():
        classes[instruction_class(trace.asm.get(pc, (2, "?", ""))[1])] += count
        symbols[trace.symbols.get(pc) or "(RAM: native code)"] += count
    n = trace.instructions
    assert target.core is not None
    return {
        "target": target.name,
        "use_case": use_case,
        "kind": kind,
        "instructions": n,
        "core": target.core,
        "cycles": {"%g" % p: cycles(trace, target.core, p) for p in REFILLS},
        "classes": {c: classes[c] / n for c in CLASSES},
        "taken_branches": sum(trace.taken.values()) / n,
        "symbols": [[name, count / n] for name, count in symbols.most_common(8)],
    }


def calibrate(target: Target) -> dict:
    """The firmware's instructions per virtual microsecond: a traced empty loop."""
    trace, lines = trace_window(target, "calibrate(%d)" % CALIBRATION_LOOPS)
    us = next(int(line.split()[1]) for line in lines if line.startswith("calibrate"))
    return {"loops": CALIBRATION_LOOPS, "us": us, "instructions": trace.instructions}


# -- the measurement --


def step_macs(use_case: str, command: dict) -> dict:
    """MACs of a reconstruction and an adaptation step (device_agent.bench.step_sizes)."""
    return bench.step_sizes(Plan(spec_for(use_case)), command)


def convert(result: dict, scale: float, sizes: dict) -> dict:
    """The probe's microseconds as instructions, beside each step's and the round's MACs."""
    out = {k: result[k] for k in ("use_case", "kernels", "kernels_why", "heap_free_built")}
    out["heap_free_end"] = result["heap_free_end"]
    for kind in ("recon", "adapt"):
        steps, us = result["steps"][kind]
        macs = sizes["%s_step_macs" % kind]
        instructions = us * scale / steps
        out["%s_step" % kind] = {
            "steps": steps,
            "macs": macs,
            "instructions": instructions,
            "per_mac": instructions / macs,
        }
    r = result.get("round")
    if r and r["fits"]:
        out["round"] = {
            "fits": True,
            "instructions": r["us"] * scale,
            "macs": r["macs"],
            "per_mac": r["us"] * scale / r["macs"],
            "samples": r["samples"],
            "payload_bytes": r["payload_bytes"],
            "drawing_instructions": r["drawing_us"] * scale,
        }
    else:
        out["round"] = {"fits": False, "error": (r or {}).get("error", "not run")}
    out["profile"] = [
        {
            **{k: row[k] for k in ("layer", "kind", "pass", "macs", "calls")},
            "instructions": row["us"] * scale,
            "per_mac": row["us"] * scale / row["macs"] if row["macs"] else None,
        }
        for row in result["profile"]
    ]
    return out


def measure_cortexm(
    use_cases: list[str], targets: list[Target], log=print, trace: bool = True
) -> dict:
    """Calibrate each firmware, run the probe for every target and use case, trace the
    adaptation steps that are small enough (with `trace`)."""
    command = bench._command(10, 20)
    boards = sorted({t.board for t in targets}, key=lambda b: [t.board for t in TARGETS].index(b))
    calibration = {}
    for name in boards:
        first = next(t for t in targets if t.board == name)
        calibration[name] = calibrate(first)
        c = calibration[name]
        log("calibrated %s: %.1f instructions per virtual µs" % (name, c["instructions"] / c["us"]))
    runs = []
    for target in targets:
        c = calibration[target.board]
        scale = c["instructions"] / c["us"]
        for use_case in use_cases:
            sizes = step_macs(use_case, command)
            run = convert(run_probe(target, use_case, command, log), scale, sizes)
            runs.append({"target": target.name, **run})
            log(_run_line(target.name, run))
    traces = []
    for target in (t for t in targets if t.trace and trace):
        for use_case in use_cases:
            run = next(r for r in runs if r["target"] == target.name and r["use_case"] == use_case)
            if run["adapt_step"]["instructions"] > TRACE_LIMIT:
                continue
            start = time.monotonic()
            call = "trace(%r, %r, 'adapt')" % (use_case, json.dumps(command))
            trace, _ = trace_window(target, call)
            summary = summarise(trace, target, use_case, "adapt")
            traces.append(summary)
            log(
                "  traced %-9s %-9s %9d instructions, CPI %.3f (%.0f s)"
                % (
                    target.name,
                    use_case,
                    summary["instructions"],
                    summary["cycles"]["2"] / summary["instructions"],
                    time.monotonic() - start,
                )
            )
    return {"command": command, "calibration": calibration, "runs": runs, "traces": traces}


def _run_line(name: str, run: dict) -> str:
    r = run["round"]
    rounds = (
        "round %6.1f M instructions, %7.1f /MAC" % (r["instructions"] / 1e6, r["per_mac"])
        if r["fits"]
        else "round did not fit (%s)" % r["error"]
    )
    return "%-9s %-9s recon %7.1f adapt %7.1f instructions/MAC; %s" % (
        name,
        run["use_case"],
        run["recon_step"]["per_mac"],
        run["adapt_step"]["per_mac"],
        rounds,
    )


# -- pricing --


def fit_per_mac(points: list[tuple[float, float]]) -> float:
    """Instructions per MAC minimising the squared relative error of instructions = a · MACs
    over (MACs, instructions) points."""
    num = sum(m / t for m, t in points)
    den = sum((m / t) ** 2 for m, t in points)
    return num / den


def rms_relative_error(points: list[tuple[float, float]], a: float) -> float:
    return math.sqrt(sum(((a * m - t) / t) ** 2 for m, t in points) / len(points))


def fits(runs: list[dict]) -> dict:
    """Each target's instructions per MAC of a round, fitted on the rounds that fit."""
    out = {}
    for target in TARGETS:
        points = [
            (float(r["round"]["macs"]), r["round"]["instructions"])
            for r in runs
            if r["target"] == target.name and r["round"]["fits"]
        ]
        if points:
            a = fit_per_mac(points)
            out[target.name] = {
                "instructions_per_mac": a,
                "rms_relative_error": rms_relative_error(points, a),
                "rounds": len(points),
            }
    return out


def core_cpi(traces: list[dict]) -> dict:
    """Each core's and kernel's CPI at zero wait states: the cycles of its targets' traced
    windows over their instructions, at P = 2 and (low, high) at P = 1 and 3."""
    out: dict = {}
    for isa, kernels in ISA_TARGETS.items():
        for kernel, name in kernels.items():
            windows = [t for t in traces if t["target"] == name]
            if not windows:
                continue
            core = windows[0]["core"]
            n = sum(t["instructions"] for t in windows)
            cpi = {p: sum(t["cycles"][p] for t in windows) / n for p in ("1", "2", "3")}
            out.setdefault(core, {})[kernel] = {
                "cpi": cpi["2"],
                "low": cpi["1"],
                "high": cpi["3"],
                "target": name,
                "isa": isa,
                "windows": [t["use_case"] for t in windows],
                "instructions": n,
            }
    return out


def round_of(runs: list[dict], target: str, use_case: str) -> dict | None:
    r = next((r for r in runs if r["target"] == target and r["use_case"] == use_case), None)
    return r["round"] if r and r["round"]["fits"] else None


def price(doc: dict) -> dict:
    """Every board's round of every use case: compute time and energy from the round's measured
    instructions (and the radio's part), and from energy.py's MAC model."""
    runs = doc["runs"]
    command = doc["command"]
    out = {}
    for use_case in USE_CASES:
        plan = Plan(spec_for(use_case))
        ref = round_of(runs, "m7-python", use_case) or round_of(runs, "m7-native", use_case)
        macs = bench.step_sizes(plan, command)
        round_macs = 10 * macs["recon_step_macs"] + 20 * macs["adapt_step_macs"]
        up = ref["payload_bytes"] if ref else None
        down = _model_bytes(plan) + _command_bytes(command)
        row: dict = {"macs": round_macs, "bytes_up": up, "bytes_down": down}
        for name, board in energy.PROFILES.items():
            radio = energy.radio_mj(up, down, board) if up is not None else None
            cells = {}
            for kernel in energy.KERNELS:
                r = round_of(runs, ISA_TARGETS[board["isa"]][kernel], use_case)
                model_s = energy.compute_seconds(round_macs, board, kernel)
                cell = {
                    "model_compute_s": model_s,
                    "model_energy_mj": energy.compute_mj(round_macs, board, kernel) + radio
                    if radio is not None
                    else None,
                }
                if r is not None and radio is not None:
                    instructions = r["instructions"] * board["isa_ratio"]
                    cell.update(
                        instructions=instructions,
                        compute_s=energy.instruction_seconds(instructions, board, kernel),
                        energy_mj=energy.instruction_mj(instructions, board, kernel) + radio,
                    )
                cells[kernel] = cell
            row[name] = {**cells, "radio_mj": radio}
        out[use_case] = row
    return out


def _model_bytes(plan: Plan) -> int:
    from device_agent import codec

    return codec.HEADER_SIZE + codec.value_section_size(plan.n_global, codec.VALUE_F32)


def _command_bytes(command: dict) -> int:
    from device_agent import codec

    return len(codec.encode_command(command))


STEP_GOALS = {"omniglot": 10.0, "kws": 10.0, "sine": 25.0, "occupancy": 25.0}
"""Instructions per MAC a training step may take on the Cortex-M7 with the compiled kernels."""
ROUND_GOAL_S = 1.0
"""Seconds an omniglot round may take on the nRF52840 profile with the compiled kernels."""


def goals(doc: dict) -> dict:
    """The goals: each step kind's instructions per MAC on m7-native, and the omniglot round on
    the nRF52840 by energy.py's model (and by the round's measured instructions)."""
    steps = []
    for r in doc["runs"]:
        if r["target"] != "m7-native":
            continue
        goal = STEP_GOALS[r["use_case"]]
        for kind in ("recon", "adapt"):
            got = r["%s_step" % kind]["per_mac"]
            steps.append(
                {
                    "use_case": r["use_case"],
                    "kind": kind,
                    "per_mac": got,
                    "goal": goal,
                    "met": got <= goal,
                    "ratio": got / goal,
                }
            )
    cell = doc["energy"]["omniglot"]["nrf52840"]["compiled"]
    return {
        "steps": steps,
        "omniglot_round_nrf52840": {
            "goal_s": ROUND_GOAL_S,
            "model_s": cell["model_compute_s"],
            "measured_s": cell.get("compute_s"),
            "met": cell["model_compute_s"] <= ROUND_GOAL_S,
        },
    }


def model_figures() -> dict:
    """What device_agent/energy.py holds now, to compare with the measured fit and CPI."""
    return {
        "instructions_per_mac": energy.INSTRUCTIONS_PER_MAC,
        "core_cpi": energy.CORE_CPI,
        "boards": {
            name: {
                kernel: {
                    "instructions_per_mac": energy.instructions_per_mac(board, kernel),
                    "cycles_per_instruction": energy.cycles_per_instruction(board, kernel),
                    "cycles_per_mac": energy.cycles_per_mac(board, kernel),
                }
                for kernel in energy.KERNELS
            }
            for name, board in energy.PROFILES.items()
        },
    }


def reprice(doc: dict) -> dict:
    """Fit, CPI, energy and goals of a document's counts, with energy.py as it is now."""
    doc.setdefault("trace_limit", TRACE_LIMIT)
    doc["fit"] = fits(doc["runs"])
    doc["cpi"] = core_cpi(doc["traces"])
    doc["model"] = model_figures()
    doc["energy"] = price(doc)
    doc["goals"] = goals(doc)
    return doc


def heap_figures(use_cases: list[str], log=print) -> dict:
    """Each use case's free heap on the Cortex-M7 firmware, with the Python and with the
    compiled kernels (broker_service.tools.firmware heap): through its full default round
    (`kernels`) and through a keyed sleeping device's training wake (`wake`)."""
    out: dict = {"board": "MPS2_AN500", "legend": firmware.HEAP_LEGEND, "kernels": {}, "wake": {}}
    for part, wake in (("kernels", False), ("wake", True)):
        for kernel, native in (("micropython", False), ("compiled", True)):
            figures = firmware.heap(
                tuple(use_cases), native=native, log=lambda line: None, wake=wake
            )
            out[part][kernel] = {f.use_case: asdict(f) for f in figures}
            for f in figures:
                log("heap %-5s %-11s %s" % ("wake" if wake else "round", kernel, f.line()))
    return out


def cortexm(
    use_cases: list[str], targets: list[Target], trace: bool = True, heap: bool = True
) -> dict:
    """The Cortex-M document: firmware, targets, counts, traces."""
    start = time.monotonic()
    doc = {
        "method": "qemu-system-arm -icount shift=0 (1 virtual ns per executed instruction); "
        "MicroPython v1.29 qemu port with single-precision floats; steps and rounds timed by "
        "benchmarks/device_probe.py, instruction mixes from -singlestep -d in_asm,exec,nochain",
        "firmware": {
            name: {"machine": b.machine, "cpu": b.cpu, "arch": b.arch}
            for name, b in firmware.BOARDS.items()
            if any(t.board == name for t in targets)
        },
        "targets": {t.name: asdict(t) for t in targets},
    }
    doc.update(measure_cortexm(use_cases, targets, trace=trace))
    if heap:
        doc["heap"] = heap_figures(use_cases)
    doc["seconds"] = time.monotonic() - start
    return doc


def report(doc: dict) -> None:
    """Print the fit, CPI and goals."""
    for name, f in doc["fit"].items():
        print(
            "%-9s %8.1f instructions/MAC of a round (rms %.0f %%, %d rounds)"
            % (name, f["instructions_per_mac"], 100 * f["rms_relative_error"], f["rounds"])
        )
    for core, kernels in doc["cpi"].items():
        for kernel, c in kernels.items():
            print(
                "%-10s %-11s CPI %.3f (P=1 %.3f, P=3 %.3f) over %s"
                % (core, kernel, c["cpi"], c["low"], c["high"], ", ".join(c["windows"]))
            )
    for s in doc["goals"]["steps"]:
        print(
            "goal %-9s %-5s %5.1f instructions/MAC (<= %g): %s"
            % (s["use_case"], s["kind"], s["per_mac"], s["goal"], "met" if s["met"] else "not met")
        )
    g = doc["goals"]["omniglot_round_nrf52840"]
    measured = "%.2f s" % g["measured_s"] if g["measured_s"] is not None else "not counted"
    print(
        "goal omniglot round on nRF52840 <= %g s: %.2f s by the model (by its instructions: "
        "%s): %s" % (g["goal_s"], g["model_s"], measured, "met" if g["met"] else "not met")
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cortexm", action="store_true", help="the Cortex-M firmware")
    parser.add_argument("--out", help="the results file (default: benchmarks/results/...)")
    parser.add_argument("--repeat", type=int, default=3, help="unix port: best of N runs")
    parser.add_argument(
        "--reprice", action="store_true", help="--cortexm: measure nothing, price --out again"
    )
    parser.add_argument("--use-case", action="append", choices=USE_CASES)
    parser.add_argument("--target", action="append", choices=[t.name for t in TARGETS])
    parser.add_argument(
        "--no-heap", action="store_true", help="--cortexm: leave out the heap figures"
    )
    parser.add_argument(
        "--heap-only",
        action="store_true",
        help="--cortexm: measure the heap figures alone into --out (its counts kept, priced "
        "again): after a change to what the agent allocates that leaves its instructions alone",
    )
    parser.add_argument(
        "--no-trace",
        action="store_true",
        help="--cortexm: count steps and rounds only, no instruction tracing (a quick look "
        "while changing the kernels, e.g. --target m7-native --use-case kws --out /tmp/x.json)",
    )
    args = parser.parse_args()
    started = load_average()
    if not args.cortexm:
        out = Path(args.out or RESULTS / "device-bench.json")
        write_results(out, unix(args.repeat), started)
        print("wrote %s" % out)
        return 0
    out = Path(args.out or RESULTS / "device-cortexm.json")
    if args.reprice or args.heap_only:
        doc = json.loads(out.read_text())
        doc["measured"] = doc.pop("measured", None) or doc.pop("provenance", None)
        if args.heap_only:
            doc["heap"] = heap_figures(args.use_case or USE_CASES)
            doc["heap"]["provenance"] = provenance(started)
    else:
        targets = [by_name()[n] for n in args.target] if args.target else list(TARGETS)
        doc = cortexm(
            args.use_case or USE_CASES, targets, trace=not args.no_trace, heap=not args.no_heap
        )
    report(reprice(doc))
    write_results(out, doc, started)
    print("wrote %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
