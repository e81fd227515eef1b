"""Sample files for devices: a use case's stream written in the agent's FileSource format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from broker_service.usecases.base import UseCase
from device_agent.datasource import write_sample_file


def write_device_samples(use_case: UseCase, device: str, path: Path, seed: int,
                         count: int = 600) -> str:
    """Write `count` samples of `device` to `path`; returns the path as a string."""
    xs, ys = use_case.stream(device, count, np.random.default_rng([seed, 99]))
    flat = xs.reshape(len(xs), -1)
    write_sample_file(str(path), flat, ys, classification=use_case.metric != "mse")
    return str(path)
