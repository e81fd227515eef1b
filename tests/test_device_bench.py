"""`device_agent.bench`: a full round of every default model inside a 256 KB MicroPython heap;
`benchmarks.device_bench`: the instruction tracer, the cores' timings it prices with, the fit.
"""

import json
import subprocess
import sys
from collections import Counter

import pytest

from benchmarks import device_bench
from broker_service.testing.session import micropython_exe
from tests.mqtt_helpers import ROOT

KEYS = {"use_case", "params", "macs_per_sample", "step_ms", "peak_heap_bytes", "payload_bytes"}


@pytest.mark.parametrize("use_case", ["sine", "omniglot", "kws", "occupancy"])
def test_board_bench_fits_256k_and_matches_cpython(use_case):
    cmd = ["-m", "device_agent.bench", use_case, "10", "20"]
    mp = subprocess.run(
        [micropython_exe(), "-X", "heapsize=256K", *cmd],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    py = subprocess.run(
        [sys.executable, *cmd], cwd=ROOT, check=True, capture_output=True, text=True, timeout=300
    )
    a, b = json.loads(mp.stdout), json.loads(py.stdout)
    assert set(a) >= KEYS and a["impl"] == "micropython"
    assert 0 < a["peak_heap_bytes"] <= 256 * 1024
    assert a["step_ms"] > 0
    assert (
        a["adapt_step_macs"] == a["macs_per_sample"]
        and 0 < a["recon_step_macs"] < a["adapt_step_macs"]
    )
    # the default round: 10 reconstruction and 20 adaptation steps
    recon = 10 * a["recon_step_macs"]
    assert a["round_macs"] == recon + 20 * a["adapt_step_macs"]
    same = ("params", "macs_per_sample", "payload_bytes", "nnz", "round_macs", "model_bytes")
    for key in same + ("command_bytes", "recon_step_macs", "adapt_step_macs", "adapt_step_params"):
        assert a[key] == b[key], key


# -- benchmarks/device_bench.py: the instruction tracer and its pricing --

LOG = """----------------
IN: f
0x00001000:  4b02       ldr      r3, [pc, #8]

Trace 0: 0x7f0000000100 [00800400/00001000/00000110/ff020201] f
----------------
IN: machine_mem_subscr
0x00002000:  b510       push     {r4, lr}

Trace 0: 0x7f0000000200 [00800400/00002000/00000110/ff020201] machine_mem_subscr
----------------
IN: g
0x00001002:  f8d3 2000  ldr.w    r2, [r3]

Trace 0: 0x7f0000000300 [00800400/00001002/00000110/ff020201] g
----------------
IN: g
0x00001006:  2a00       cmp      r2, #0

Trace 0: 0x7f0000000400 [00800400/00001006/00000110/ff020201] g
----------------
IN: g
0x00001008:  d1fb       bne      #0x1002

Trace 0: 0x7f0000000500 [00800400/00001008/00000110/ff020201] g
Trace 0: 0x7f0000000300 [00800400/00001002/00000110/ff020201] g
Trace 0: 0x7f0000000400 [00800400/00001006/00000110/ff020201] g
Trace 0: 0x7f0000000500 [00800400/00001008/00000110/ff020201] g
----------------
IN: g
0x0000100a:  4770       bx       lr

Trace 0: 0x7f0000000600 [00800400/0000100a/00000110/ff020201] g
Trace 0: 0x7f0000000200 [00800400/00002000/00000110/ff020201] machine_mem_subscr
Trace 0: 0x7f0000000300 [00800400/00001002/00000110/ff020201] g
"""
"""A QEMU `in_asm,exec,nochain` log: a loop run twice between two entries into the marker."""


def test_the_tracer_counts_the_window_between_two_markers(tmp_path):
    path = tmp_path / "log"
    path.write_text(LOG)
    trace = device_bench.Trace(Counter(), Counter(), {}, {})
    device_bench.read_log(str(path), 0x2000, trace)
    assert trace.markers == 2
    # the marker's first instruction opens the window; the loop runs twice, then bx
    assert trace.execs == Counter({0x2000: 1, 0x1002: 2, 0x1006: 2, 0x1008: 2, 0x100A: 1})
    assert trace.instructions == 8
    # after the marker's push the next address is elsewhere, as after bx; bne is taken once
    # and falls through once; the ldr.w is 4 bytes
    assert trace.taken == Counter({0x2000: 1, 0x1008: 1, 0x100A: 1})
    assert trace.asm[0x1002] == (4, "ldr.w", "r2, [r3]")
    assert trace.symbols[0x1002] == "g"


def _trace(*rows):
    """A Trace of (address, size, mnemonic, operands, executions, taken) rows."""
    trace = device_bench.Trace(Counter(), Counter(), {}, {})
    for pc, size, mnemonic, operands, n, taken in rows:
        trace.asm[pc] = (size, mnemonic, operands)
        trace.execs[pc] += n
        trace.taken[pc] += taken
    return trace


def test_cortex_m4_timings_follow_its_manual():
    cycles = device_bench.m4_cycles
    assert cycles("adds", "r0, r1, r2", False, False, 2) == 1
    assert cycles("ldr.w", "r2, [r3]", False, False, 2) == 2
    assert cycles("ldr.w", "r2, [r3]", False, True, 2) == 1  # pipelined after a load
    assert cycles("bne", "#0x10", True, False, 2) == 3
    assert cycles("bne.w", "#0x10", False, False, 2) == 1
    assert cycles("b.w", "#0x10", False, False, 1) == 2  # unconditional: always taken
    assert cycles("bl", "#0x10", False, False, 3) == 4
    assert cycles("push", "{r4, r5, r6, lr}", False, False, 2) == 5
    assert cycles("pop", "{r4, pc}", False, False, 2) == 5
    assert cycles("vldmia", "r3!, {s14, s15}", False, False, 2) == 3
    assert cycles("vpush", "{d8, d9}", False, False, 2) == 5
    assert cycles("vldr", "s15, [r3]", False, False, 2) == 2
    assert cycles("vmul.f32", "s15, s14, s15", False, False, 2) == 1
    assert cycles("vdiv.f32", "s0, s1, s2", False, False, 2) == 14
    assert cycles("moveq", "r0, #1", False, False, 2) == 1
    assert device_bench.base_mnemonic("ldrbeq.w") == "ldrb"
    assert device_bench.base_mnemonic("bics") == "bics"
    assert device_bench.base_mnemonic("teq.w") == "teq"


def test_cortex_m0plus_timings_follow_its_manual():
    cycles = device_bench.m0plus_cycles
    assert cycles("ldr", "r0, [r1]", False, True, 2) == 2  # no pipelining
    assert cycles("beq", "#0x10", True, False, 2) == 2
    assert cycles("beq", "#0x10", False, False, 2) == 1
    assert cycles("bl", "#0x10", False, False, 2) == 3
    assert cycles("pop", "{r4, r5, pc}", False, False, 2) == 5  # 3 + N, N without PC
    assert cycles("pop", "{r4, r5}", False, False, 2) == 3
    assert cycles("muls", "r0, r1, r0", False, False, 2) == 1


def test_a_window_is_priced_with_its_taken_branches():
    # a loop of ldr, adds, bne run 10 times, taken 9: 10 · (2 + 1) + 9 · 3 + 1 cycles at P = 2
    trace = _trace(
        (0x100, 2, "ldr", "r0, [r1]", 10, 0),
        (0x102, 2, "adds", "r1, #4", 10, 0),
        (0x104, 2, "bne", "#0x100", 10, 9),
    )
    assert device_bench.cycles(trace, "cortex-m4", 2) == 10 * 3 + 9 * 3 + 1
    assert device_bench.cycles(trace, "cortex-m4", 1) == 10 * 3 + 9 * 2 + 1
    assert device_bench.cycles(trace, "cortex-m0+", 2) == 10 * 3 + 9 * 2 + 1
    summary = device_bench.summarise(trace, device_bench.by_name()["m7-native"], "sine", "adapt")
    assert summary["instructions"] == 30
    assert summary["classes"]["load"] == pytest.approx(1 / 3)
    assert summary["taken_branches"] == pytest.approx(9 / 30)


def test_the_fit_recovers_a_known_cost_per_mac():
    points = [(m, 12.5 * m) for m in (1_000.0, 75_000.0, 3.6e6)]
    assert device_bench.fit_per_mac(points) == pytest.approx(12.5)
    assert device_bench.rms_relative_error(points, 12.5) == pytest.approx(0, abs=1e-12)
    assert device_bench.rms_relative_error(points, 25.0) == pytest.approx(1.0)


def test_traced_instructions_are_what_the_firmware_clock_counts():
    """The premise of the Cortex-M figures: under -icount shift=0 the MPS2 firmware's
    microseconds times 1000 are the instructions QEMU executed, and the tracer sees them."""
    target = device_bench.by_name()["m7-native"]
    trace, lines = device_bench.trace_window(target, "calibrate(2000)")
    us = next(int(line.split()[1]) for line in lines if line.startswith("calibrate"))
    assert trace.markers >= 2
    assert trace.instructions == pytest.approx(1000 * us, rel=0.01)
