"""A new device's few-shot episode: the unit of data every evaluation works on.

Use cases draw episodes from the devices kept out of training (broker_service.usecases) and the
few-shot evaluation adapts on them and measures (core.fewshot); the type lives here, with the
learning maths, so that the maths needs nothing of the use cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Episode:
    """A new device's data: adapt on (support_x, support_y), measure on (query_x, query_y).

    x arrays have shape (n, *input_shape) and dtype float32; y arrays are float32 of shape
    (n, outputs) for regression and int64 of shape (n,) (class indices) for classification.
    `unit` names the independent unit the episode belongs to (empty: the episode itself).
    """

    device_id: str
    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    unit: str = ""

    @property
    def unit_id(self) -> str:
        """The unit a confidence interval counts this episode in (the device id by default)."""
        return self.unit or self.device_id
