# Runs device rounds with closed-form heads (prototypes, ridge) and prints each payload as hex,
# then the round's MACs and recon loss (MicroPython or CPython).
# Usage: micropython tests/mpy/head_once.py  (from the repository root)
import sys

sys.path.insert(0, ".")
import math  # noqa: E402
from array import array  # noqa: E402

from device_agent.model import Plan, init_params  # noqa: E402
from device_agent.network import Network  # noqa: E402
from device_agent.round import run_round  # noqa: E402

CNN = {
    "input": [1, 6, 6],
    "loss": "softmax_ce",
    "local_layers": 1,
    "layers": [
        {"type": "conv2d", "filters": 2, "kernel": 3, "stride": 1},
        {"type": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 6},
        {"type": "relu"},
        {"type": "dense", "units": 3},
    ],
}
MLP = {
    "input": [1],
    "loss": "mse",
    "local_layers": 1,
    "layers": [
        {"type": "dense", "units": 12},
        {"type": "relu"},
        {"type": "dense", "units": 12},
        {"type": "relu"},
        {"type": "dense", "units": 1},
    ],
}
COMMAND = {
    "round": 1,
    "version": 1,
    "recon_samples": 8,
    "adapt_samples": 8,
    "recon_lr": 0.1,
    "adapt_lr": 0.05,
    "top_p": 20.0,
    "values": "f32",
    "error_feedback": False,
    "seed": 3,
    "head_init": "closed_form",
    "head_ridge": 0.25,
}


def cnn_samples(n):
    for i in range(n):
        x = array("f", [math.sin(0.37 * i + 0.11 * j) for j in range(36)])
        yield x, i % 3


def mlp_samples(n):
    for i in range(n):
        x = -1.0 + 2.0 * i / n
        yield array("f", [x]), [1.5 * math.sin(3.0 * x + 0.5)]


CASES = (("cnn", CNN, cnn_samples), ("mlp", MLP, mlp_samples))

for _name, spec, samples in CASES:
    plan = Plan(spec)
    params = array("f", bytes(4 * plan.n_params))
    init_params(plan, params, 5)
    result = run_round(Network(plan), params, samples(16), COMMAND)
    print(result.payload.hex())
    print(result.macs, "%.6f" % result.recon_loss)
