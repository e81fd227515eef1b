# One device round per model, run with the compiled kernels and with the pure-Python ones in the
# same process; prints "<kernels> <model> <payload hex> <macs> <samples> <nnz> <losses...>".
# Usage: MICROPYPATH=build/native/x64 micropython tests/mpy/native_round.py  (from the root)
import math
import sys
from array import array

sys.path.insert(0, ".")
from device_agent.compat import use_native  # noqa: E402
from device_agent.model import Plan, init_params  # noqa: E402
from device_agent.network import Network  # noqa: E402
from device_agent.round import run_round  # noqa: E402

MODELS = {
    "cnn-ce": {
        "input": [1, 9, 8],
        "loss": "softmax_ce",
        "local_layers": 1,
        "layers": [
            {"type": "conv2d", "filters": 3, "kernel": 3, "stride": 1},
            {"type": "relu"},
            {"type": "maxpool", "size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 6},
            {"type": "tanh"},
            {"type": "dense", "units": 4},
        ],
    },
    "strided-mse": {
        "input": [2, 11, 10],
        "loss": "mse",
        "grad_clip": 0.5,
        "local_layers": 1,
        "layers": [
            {"type": "conv2d", "filters": 4, "kernel": [3, 2], "stride": [2, 3]},
            {"type": "tanh"},
            {"type": "avgpool", "size": [2, 1]},
            {"type": "conv2d", "filters": 3, "kernel": 2, "stride": 1},
            {"type": "relu"},
            {"type": "flatten"},
            {"type": "dense", "units": 2},
        ],
    },
}
COMMAND = {
    "round": 1,
    "version": 1,
    "recon_samples": 6,
    "adapt_samples": 10,
    "recon_lr": 0.1,
    "adapt_lr": 0.05,
    "top_p": 20.0,
    "values": "f32",
    "seed": 3,
}


def samples(plan, count):
    """Deterministic inputs and targets of the plan's shapes (floats or class labels)."""
    n_in = plan.layers[0].size_in()
    for i in range(count):
        x = array("f", [math.sin(0.37 * i + 0.11 * j) for j in range(n_in)])
        if plan.loss == "mse":
            yield x, [math.cos(0.5 * i + k) for k in range(plan.output_size)]
        else:
            yield x, i % plan.output_size


def run(name, native):
    """The round of model `name` with or without the compiled kernels, as one output line."""
    use_native(native)
    plan = Plan(MODELS[name])
    params = array("f", bytes(4 * plan.n_params))
    init_params(plan, params, 5)
    residual = array("f", bytes(4 * plan.n_global))
    net = Network(plan)
    r = run_round(net, params, samples(plan, 16), COMMAND, residual)
    losses = "%r %r %r" % (r.recon_loss, r.adapt_loss_first, r.adapt_loss_last)
    return "%s %s %s %d %d %d %s" % (
        net.kernels,
        name,
        r.payload.hex(),
        r.macs,
        r.samples,
        r.nnz,
        losses,
    )


if __name__ == "__main__":
    for model in MODELS:
        print(run(model, True))
        print(run(model, False))
