"""Shared test helpers: small specs covering every layer type, array conversions, waiting for a
log line, and starting the service in its own process (waiting for an event with a deadline is
broker_service.testing.waiting, shared with the benchmarks)."""

from __future__ import annotations

import os
import subprocess
import sys
from array import array
from pathlib import Path

import numpy as np

from broker_service.testing.waiting import wait_until
from device_agent.model import Plan, init_params

ROOT = Path(__file__).resolve().parents[1]

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


def read_text(path: Path) -> str:
    """The file's text, or "" while it does not exist yet."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def wait_for_text(path: Path, text: str, timeout: float) -> str:
    """Wait until the file (a log) contains `text`; returns the file's text then."""

    def containing() -> str:
        content = read_text(path)
        return content if text in content else ""

    return wait_until(containing, timeout, "%r in %s" % (text, path.name))


def start_serve(port, state, log, *flags, env=None) -> subprocess.Popen:
    """`tinymetafed serve` (sine) in its own process against 127.0.0.1:port, state in `state`,
    output appended to `log`; `flags` and `env` add to the command and the environment."""
    cmd = [
        sys.executable, "-m", "broker_service.cli", "serve",
        "--broker", "mqtt://127.0.0.1:%d" % port, "--use-case", "sine",
        "--state-dir", str(state), "--eval-devices", "2", *flags,
    ]  # fmt: skip
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with open(log, "a") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
