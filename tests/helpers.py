"""Shared test helpers: small specs covering every layer type, parameters, samples and relative
errors. Waiting for an event or a log line, and starting a broker, the service and agents, are
broker_service.testing (waiting, session), shared with the benchmarks."""

from __future__ import annotations

from array import array

import numpy as np

from device_agent.model import Plan, init_params

LAYER_SPECS = {
    "dense": {"input": [6], "layers": [{"type": "dense", "units": 4}], "loss": "mse"},
    "conv2d": {
        "input": [2, 7, 6],
        "layers": [
            {"type": "conv2d", "filters": 3, "kernel": [3, 2], "stride": [2, 1]},
            {"type": "flatten"},
            {"type": "dense", "units": 2},
        ],
        "loss": "mse",
    },
    "maxpool": {
        "input": [2, 5, 6],
        "layers": [
            {"type": "maxpool", "size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 3},
        ],
        "loss": "softmax_ce",
    },
    "avgpool": {
        "input": [1, 6, 7],
        "layers": [{"type": "avgpool", "size": [2, 3]}, {"type": "dense", "units": 2}],
        "loss": "mse",
    },
    "relu": {
        "input": [5],
        "layers": [{"type": "dense", "units": 6}, {"type": "relu"}, {"type": "dense", "units": 3}],
        "loss": "softmax_ce",
    },
    "tanh": {
        "input": [5],
        "layers": [{"type": "dense", "units": 6}, {"type": "tanh"}, {"type": "dense", "units": 2}],
        "loss": "mse",
    },
    "cnn": {
        "input": [1, 10, 9],
        "layers": [
            {"type": "conv2d", "filters": 3, "kernel": 3, "stride": 1},
            {"type": "relu"},
            {"type": "maxpool", "size": 2},
            {"type": "conv2d", "filters": 4, "kernel": 2},
            {"type": "tanh"},
            {"type": "flatten"},
            {"type": "dense", "units": 3},
        ],
        "loss": "softmax_ce",
    },
}


def fresh_params(spec: dict, seed: int = 1) -> tuple[Plan, array]:
    """A plan and its xorshift-initialised parameters as array('f')."""
    plan = Plan(spec)
    params = array("f", bytes(4 * plan.n_params))
    init_params(plan, params, seed)
    return plan, params


def sample(plan: Plan, rng: np.random.Generator) -> tuple[np.ndarray, object]:
    """A random input and a target suited to the plan's loss."""
    x = rng.standard_normal(int(np.prod(plan.input_shape))).astype(np.float32)
    if plan.loss == "softmax_ce":
        return x, int(rng.integers(0, plan.output_size))
    return x, rng.standard_normal(plan.output_size).astype(np.float32)


def rel_err(a, b) -> float:
    """‖a − b‖ / max(‖b‖, tiny): the relative error used by the parity tests."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))
