"""On-device benchmark: one full round of a use case's default model, without a broker.

    micropython -X heapsize=256K -m device_agent.bench <use-case> [recon adapt] [--python]
    python -m device_agent.bench <use-case>

Samples are generated (deterministic xorshift inputs of the model's shape), so it needs no data
files. Prints one JSON line: use_case, impl, params, macs_per_sample (one full training step),
step_ms (mean per-sample training step over the round), recon_step_ms, adapt_step_ms,
recon_step_macs and adapt_step_macs (MACs of one step of each kind), recon_step_params and
adapt_step_params (parameters each step updates), peak_heap_bytes (on MicroPython the highest live
heap, gc.mem_alloc() after a collection at every sample of a second, untimed round; on CPython
tracemalloc's peak), payload_bytes, model_bytes and command_bytes (the dense f32 MODEL and the
COMMAND a device receives for the round), kernels ("native": the compiled module tmf_kernels,
found on the import path, e.g. MICROPYPATH=build/native/x64 on the unix port; "python": the
pure-Python kernels, forced with --python) and kernels_why (why not native, "" when native).
"""

import gc
import json
import sys
from array import array

from device_agent import codec
from device_agent.clock import ticks_us, us_since
from device_agent.compat import native_status, use_native
from device_agent.datasource import SyntheticSource
from device_agent.model import Plan, init_params
from device_agent.network import Network
from device_agent.round import adapt_layers, effective_split, head_index, round_settings, run_round
from device_agent.specs import spec_for

IMPL = sys.implementation.name


class TimedSamples:
    """Synthetic samples that also time the training step between two draws."""

    def __init__(self, plan, count, seed=1, collect=False):
        self.source = SyntheticSource(plan, seed)
        self.count = count
        self.collect = collect
        self.times_us = []
        self.heap_peak = 0
        self._last = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._last is not None:
            self.times_us.append(us_since(self._last))
        if self.collect and hasattr(gc, "mem_alloc"):
            gc.collect()
            self.heap_peak = max(self.heap_peak, gc.mem_alloc())
        if len(self.times_us) >= self.count:
            raise StopIteration
        sample = next(self.source)
        self._last = ticks_us()
        return sample


def run(use_case, recon=10, adapt=20):
    """Run the round and return the figures as a dict."""
    plan = Plan(spec_for(use_case))
    gc.collect()
    if IMPL != "micropython":
        import tracemalloc  # type: ignore[import-not-found]  # CPython only

        tracemalloc.start()
    net = Network(plan)
    params = array("f", bytes(4 * plan.n_params))
    init_params(plan, params, 1)
    residual = array("f", bytes(4 * plan.n_global))
    samples = TimedSamples(plan, recon + adapt)
    command = _command(recon, adapt)
    steps = step_sizes(plan, command)
    start = ticks_us()
    result = run_round(net, params, samples, command, residual)
    total_us = us_since(start)
    times = samples.times_us
    if IMPL == "micropython":
        peak = _live_heap_peak(net, plan, command)
    else:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    figures = {
        "use_case": use_case,
        "impl": IMPL,
        "params": plan.n_params,
        "global_params": plan.n_global,
        "macs_per_sample": plan.train_step_macs(plan.param_layers[0]),
        "round_macs": result.macs,
        "samples": result.samples,
        "step_ms": sum(times) / len(times) / 1000.0 if times else 0.0,
        "recon_step_ms": _mean_ms(times[:recon]),
        "adapt_step_ms": _mean_ms(times[recon:]),
        "round_ms": total_us / 1000.0,
        "peak_heap_bytes": peak,
        "payload_bytes": len(result.payload),
        "model_bytes": codec.HEADER_SIZE + codec.value_section_size(plan.n_global, codec.VALUE_F32),
        "command_bytes": len(codec.encode_command(command)),
        "nnz": result.nnz,
        "kernels": net.kernels,
        "kernels_why": native_status()[1],
    }
    figures.update(steps)
    return figures


def trained_params(plan, first, last=None):
    """Parameters one SGD step updates when it trains param layers first..last (None: the top)."""
    top = len(plan.layers) - 1 if last is None else last
    return sum(plan.layers[i].n_params for i in plan.param_layers if first <= i <= top)


def step_sizes(plan, command):
    """MACs and parameters updated by one reconstruction step and one adaptation step."""
    s = round_settings(command)
    s["split"] = effective_split(plan, s["split"])
    first, last = adapt_layers(plan, s)
    head = head_index(plan)
    return {
        "recon_step_macs": plan.train_step_macs(head) if s["split"] else 0,
        "recon_step_params": trained_params(plan, head) if s["split"] else 0,
        "adapt_step_macs": plan.train_step_macs(first, last),
        "adapt_step_params": trained_params(plan, first, last),
    }


def _command(recon, adapt):
    return {"recon_samples": recon, "adapt_samples": adapt, "top_p": 10.0, "values": "f16"}


def _live_heap_peak(net, plan, command):
    """A second, untimed round that collects garbage at every sample: the peak of live heap."""
    params = array("f", bytes(4 * plan.n_params))
    init_params(plan, params, 1)
    residual = array("f", bytes(4 * plan.n_global))
    samples = TimedSamples(plan, command["recon_samples"] + command["adapt_samples"], True)
    result = run_round(net, params, samples, command, residual)
    gc.collect()
    return max(samples.heap_peak, gc.mem_alloc() + len(result.payload))


def _mean_ms(times):
    return sum(times) / len(times) / 1000.0 if times else 0.0


def main(argv):
    """Command-line entry: use case and optional sample counts from argv."""
    if "--python" in argv:
        use_native(False)
        argv = [a for a in argv if a != "--python"]
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print("usage: device_agent.bench <sine|omniglot|kws|occupancy> [recon adapt] [--python]")
        return 2
    recon = int(argv[2]) if len(argv) > 2 else 10
    adapt = int(argv[3]) if len(argv) > 3 else 20
    print(json.dumps(run(argv[1], recon, adapt)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
