# Runs one device round with the agent maths and prints the payload as hex (MicroPython or CPython).
# Usage: micropython tests/mpy/round_once.py  (from the repository root)
import sys

sys.path.insert(0, ".")
import math  # noqa: E402
from array import array  # noqa: E402

from device_agent.model import Plan, init_params  # noqa: E402
from device_agent.network import Network  # noqa: E402
from device_agent.round import run_round  # noqa: E402

SPEC = {
    "input": [1, 6, 6],
    "loss": "softmax_ce",
    "local_layers": 1,
    "layers": [
        {"type": "conv2d", "filters": 2, "kernel": 3, "stride": 1},
        {"type": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 6},
        {"type": "tanh"},
        {"type": "dense", "units": 3},
    ],
}


def samples(n):
    for i in range(n):
        x = array("f", [math.sin(0.37 * i + 0.11 * j) for j in range(36)])
        yield x, i % 3


plan = Plan(SPEC)
params = array("f", bytes(4 * plan.n_params))
init_params(plan, params, 5)
residual = array("f", bytes(4 * plan.n_global))
command = {
    "round": 1,
    "version": 1,
    "recon_samples": 6,
    "adapt_samples": 8,
    "recon_lr": 0.1,
    "adapt_lr": 0.05,
    "top_p": 20.0,
    "values": "f32",
    "seed": 3,
}
result = run_round(Network(plan), params, samples(14), command, residual)
print(result.payload.hex())
print(result.macs, result.samples, result.nnz)
# a later round after 2 rounds away: the residual of round 1 is added back
stale = dict(command, round=4)
init_params(plan, params, 5)
print(run_round(Network(plan), params, samples(14), stale, residual, 1).payload.hex())
