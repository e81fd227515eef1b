"""The agent's training on a Cortex-M firmware under QEMU, timed in virtual microseconds.

MicroPython code, not a benchmark module: benchmarks/device_bench.py (`--cortexm`) puts it into
the firmware's ROMFS image beside the agent and calls one of its functions through the raw
REPL. QEMU runs with `-icount shift=0`, so the firmware's clock counts executed instructions;
device_bench.py converts the microseconds printed here with the firmware's measured
instructions per microsecond (1000 on the MPS2 boards), from `calibrate`.

`main(use_case, command)`: for the use case's default model (device_agent.specs) and a round
command, in this order:

- `round`: a whole run_round after a warm-up round of one sample each (the warm-up imports what
  a round imports lazily, as a board's first round does once), less the time spent drawing the
  synthetic samples (a board reads them from a sensor or a file: not the agent's compute). A
  MemoryError is recorded (`fits` false) and the steps below stand alone;
- `steps`: reconstruction and adaptation steps (Network.train_step as run_round calls it),
  each timed alone on a fresh synthetic sample;
- `profile`: each layer's forward and backward kernel as an adaptation step calls it, and the
  loss with its gradient, each repeated until PROFILE_US have passed, the loop's own time off.

It prints progress lines and, last, `result <JSON>`. `trace` runs training steps between two
markers for device_bench.py's instruction tracer; `calibrate` an empty loop between them.
"""

import gc
import json
from array import array

from device_agent.clock import ticks_us, us_since
from device_agent.compat import native_status
from device_agent.datasource import SyntheticSource
from device_agent.model import Plan, init_params
from device_agent.network import Network
from device_agent.round import adapt_layers, head_index, round_settings, run_round
from device_agent.specs import spec_for

PROFILE_US = 1000
"""Virtual microseconds a profiled kernel is repeated for (at least one call)."""
MARK_ADDRESS = 0x20000000
"""A RAM word every board maps: reading it through machine.mem32 runs the firmware's
machine_mem_subscr, which device_bench.py's tracer takes as the window's edges."""


class Drawn:
    """Synthetic samples that add up the time spent drawing them."""

    def __init__(self, plan, seed):
        self.source = SyntheticSource(plan, seed)
        self.us = 0

    def __iter__(self):
        return self

    def __next__(self):
        start = ticks_us()
        sample = next(self.source)
        self.us += us_since(start)
        return sample


def reset(plan, params, residual):
    """θ as a round finds it (init_params from seed 1) and an empty error-feedback residual,
    in the same buffers: no parameter-sized block allocated twice."""
    init_params(plan, params, 1)
    for i in range(len(residual)):
        residual[i] = 0.0


def step_args(plan, settings, kind):
    """(first, last, lr) of a training step of `kind`, "recon" or "adapt", as run_round runs it."""
    if kind == "recon":
        return head_index(plan), None, settings["recon_lr"]
    first, last = adapt_layers(plan, settings)
    return first, last, settings["adapt_lr"]


def time_steps(net, params, settings, kind, count, source):
    """Virtual µs of `count` training steps of `kind`, each timed alone on a fresh sample."""
    first, last, lr = step_args(net.plan, settings, kind)
    total = 0
    for i in range(count):
        x, y = next(source)
        start = ticks_us()
        net.train_step(params, x, y, lr, first, last)
        spent = us_since(start)
        total += spent
        print("step", kind, i, spent)
    return total


def time_round(net, params, residual, command, source):
    """(virtual µs of a whole round less the sample drawing, µs of the drawing, the
    RoundResult), after a warm-up round of one sample each."""
    plan = net.plan
    warm = dict(command)
    warm["recon_samples"] = 1
    warm["adapt_samples"] = 1
    reset(plan, params, residual)
    run_round(net, params, source, warm, residual)
    reset(plan, params, residual)
    gc.collect()
    drawn = source.us
    start = ticks_us()
    result = run_round(net, params, source, command, residual)
    total = us_since(start)
    drawn = source.us - drawn
    return total - drawn, drawn, result


def _calls_us(f, args, calls):
    """Virtual µs of `calls` calls f(*args) (4 or 7 arguments, no allocation per call)."""
    if len(args) == 4:
        a, b, c, d = args
        start = ticks_us()
        for _ in range(calls):
            f(a, b, c, d)
        return us_since(start)
    a, b, c, d, e, g, h = args
    start = ticks_us()
    for _ in range(calls):
        f(a, b, c, d, e, g, h)
    return us_since(start)


def _empty_us(calls):
    start = ticks_us()
    for _ in range(calls):
        pass
    return us_since(start)


def per_call_us(f, args):
    """(virtual µs one call f(*args) takes, calls timed): the calls are repeated 1, 4, 16, ...
    times until PROFILE_US have passed; the loop's own time is taken off."""
    calls = 1
    while True:
        spent = _calls_us(f, args, calls)
        if spent >= PROFILE_US or calls >= 4096:
            break
        calls *= 4
    return (spent - _empty_us(calls)) / calls, calls


def profile(net, params, settings, source):
    """Each kernel call of an adaptation step, as Network.train_step makes them (the forward
    calls in layer order, the loss, the backward calls from the output down with the same
    gradient buffers): virtual µs a call, its own cost included, and its MACs."""
    plan = net.plan
    first, last = adapt_layers(plan, settings)
    if last is None:
        last = len(plan.layers) - 1
    x, y = next(source)
    net.forward(params, x)
    acts = net.acts
    rows = []
    for i in range(len(plan.layers)):
        a = net._layer_args[i]
        us, calls = per_call_us(net._forward, (a, params, acts[i], acts[i + 1]))
        rows.append(_row(i, plan.layers[i].kind, "forward", plan.layers[i].macs, us, calls))
    dy, spare = net.grad_a, net.grad_b
    us, calls = per_call_us(net._loss_grad, (acts[-1], y, dy, plan.grad_clip))
    rows.append(_row(-1, "loss", "loss", 0, us, calls))
    for buf in (dy, spare):
        for j in range(len(buf)):
            buf[j] = 0.01
    in_place = getattr(net, "in_place", None)
    for i in range(len(plan.layers) - 1, first - 1, -1):
        layer = plan.layers[i]
        if i == first:
            dx = None
        elif in_place is not None and in_place[i]:
            dx = dy
        else:
            dx = spare
        step = settings["adapt_lr"] if i <= last and layer.n_params else 0.0
        macs = 0
        if layer.n_params:
            macs = (layer.macs if step else 0) + (layer.macs if dx is not None else 0)
        args = (net._layer_args[i], params, acts[i], acts[i + 1], dy, dx, step)
        us, calls = per_call_us(net._backward, args)
        rows.append(_row(i, layer.kind, "backward", macs, us, calls))
        if dx is not None and dx is not dy:
            dy, spare = dx, dy
    return rows


def _row(i, kind, what, macs, us, calls):
    return {"layer": i, "kind": kind, "pass": what, "macs": macs, "us": us, "calls": calls}


def main(use_case, command_json, recon_steps=10, adapt_steps=20, do_round=True):
    """Measure `use_case` with the round command `command_json` (see the module docstring);
    prints progress and, last, `result <JSON>`."""
    command = json.loads(command_json)
    gc.collect()
    plan = Plan(spec_for(use_case))
    net = Network(plan)
    settings = round_settings(command)
    params = array("f", bytes(4 * plan.n_params))
    residual = array("f", bytes(4 * plan.n_global))
    source = Drawn(plan, 1)
    gc.collect()
    doc = {
        "use_case": use_case,
        "kernels": net.kernels,
        "kernels_why": native_status()[1],
        "heap_free_built": gc.mem_free(),
    }
    if do_round:
        try:
            spent, drawing, result = time_round(net, params, residual, command, source)
            doc["round"] = {
                "fits": True,
                "us": spent,
                "drawing_us": drawing,
                "macs": result.macs,
                "samples": result.samples,
                "payload_bytes": len(result.payload),
            }
            result = None
        except MemoryError as exc:
            doc["round"] = {"fits": False, "error": repr(exc)}
        print("round done")
    doc["steps"] = {}
    for kind, count in (("recon", recon_steps), ("adapt", adapt_steps)):
        reset(plan, params, residual)
        gc.collect()  # the round's garbage is collected in the round's time, not in a step's
        doc["steps"][kind] = [count, time_steps(net, params, settings, kind, count, source)]
    print("steps done")
    reset(plan, params, residual)
    gc.collect()
    doc["profile"] = profile(net, params, settings, source)
    print("profile done")
    gc.collect()
    doc["heap_free_end"] = gc.mem_free()
    print("result", json.dumps(doc))


def cheap_sample(plan):
    """One fixed sample of the plan's shapes, made without the synthetic source's xorshift
    (thousands of instructions a value): inputs in [-0.75, 0.75], a class or targets."""
    x = array("f", bytes(4 * plan.layers[0].size_in()))
    for i in range(len(x)):
        x[i] = ((i * 7) % 13 - 6) / 8.0
    if plan.loss != "mse":
        return x, 1 % plan.output_size
    return x, [0.25] * plan.output_size


def mark(mem32):
    """Run the tracer's marker once (`mem32`: machine.mem32; see MARK_ADDRESS)."""
    return mem32[MARK_ADDRESS]


def trace(use_case, command_json, kind, steps=1):
    """`steps` training steps of `kind` between two markers, after one unmarked warm-up step."""
    from machine import mem32

    command = json.loads(command_json)
    plan = Plan(spec_for(use_case))
    net = Network(plan)
    params = array("f", bytes(4 * plan.n_params))
    init_params(plan, params, 1)
    x, y = cheap_sample(plan)
    first, last, lr = step_args(plan, round_settings(command), kind)
    net.train_step(params, x, y, lr, first, last)
    gc.collect()
    mark(mem32)
    for _ in range(steps):
        net.train_step(params, x, y, lr, first, last)
    mark(mem32)
    _flush()
    print("traced", use_case, kind, steps, net.kernels)


def calibrate(loops):
    """An empty loop between two markers, timed: the tracer's instruction count of the window
    over these microseconds is the firmware's instructions per virtual microsecond."""
    from machine import mem32

    gc.collect()
    start = ticks_us()
    mark(mem32)
    for _ in range(loops):
        pass
    mark(mem32)
    spent = us_since(start)
    _flush()
    print("calibrate", spent)


def _flush():
    """Run on a little past the second marker, so that QEMU writes out its log up to it."""
    for _ in range(2000):
        pass
