"""θ_0: the meta-initialisation every algorithm, the service and the agent start from.

A fresh θ_l on a device is drawn by device_agent.round.init_local (shared with the numpy twin).
"""

from __future__ import annotations

import numpy as np

from broker_service.core.nn import NumpyNet
from device_agent.model import init_params


def initial_theta(net: NumpyNet, seed: int) -> np.ndarray:
    """All parameters drawn with the shared xorshift init from `seed` (identical for every
    algorithm and on the agent); callers keep the θ_g prefix they send."""
    params = np.zeros(net.plan.n_params, dtype=np.float32)
    init_params(net.plan, params, seed)
    return params
