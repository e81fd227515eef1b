"""Sample files for devices: a use case's stream written in the agent's FileSource format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from broker_service.usecases.base import UseCase
from device_agent.datasource import FileSource, write_sample_file


def write_device_samples(
    use_case: UseCase, device: str, path: Path, seed: int, count: int = 600
) -> str:
    """Write `count` samples of `device` to `path`; returns the path as a string."""
    xs, ys = use_case.stream(device, count, np.random.default_rng([seed, 99]))
    flat = xs.reshape(len(xs), -1)
    write_sample_file(str(path), flat, ys, classification=use_case.metric != "mse")
    return str(path)


def read_sample_file(path: str | Path, plan) -> tuple[np.ndarray, np.ndarray]:
    """All samples of a sample file as (x of the plan's input shape, y) arrays."""
    classification = plan.loss == "softmax_ce"
    source = FileSource(str(path), plan.layers[0].size_in(), classification, loop=False)
    xs, ys = [], []
    for x, y in source:
        xs.append(
            np.array(x, dtype=np.float32).reshape(
                plan.input_shape
                if len(plan.input_shape) == 3 and plan.input_shape[1:] != (1, 1)
                else (-1,)
            )
        )
        ys.append(y if classification else np.array(y, dtype=np.float32))
    if not xs:
        raise ValueError("%s holds no samples" % path)
    return np.stack(xs), (np.array(ys, dtype=np.int64) if classification else np.stack(ys))
