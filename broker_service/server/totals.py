"""The session's running totals: updates, bytes each way, energy and rejections.

They are kept in the checkpoint (under `extra["totals"]`) so a restarted service goes on counting
where it stopped; `to_dict` / `from_dict` are the one serialisation, used by the checkpoint and
the session summary alike.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Totals:
    """Running totals over the session (kept in the checkpoint across restarts)."""

    updates: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    dense_bytes_up: int = 0
    energy_mj: float = 0.0
    rejected: Counter[str] = field(default_factory=Counter)

    def add_round(
        self,
        updates: int,
        bytes_up: int,
        dense_bytes_up: int,
        energy_mj: float,
        rejected: Mapping[str, int],
    ) -> None:
        """Count a closed round (bytes down are counted as the commands are sent)."""
        self.updates += updates
        self.bytes_up += bytes_up
        self.dense_bytes_up += dense_bytes_up
        self.energy_mj += energy_mj
        self.rejected.update(rejected)

    def upload_saving(self) -> float:
        """How many times fewer bytes went up than dense float32 updates would take (NaN
        before any update)."""
        return (self.dense_bytes_up / self.bytes_up) if self.bytes_up else math.nan

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (the checkpoint's `totals` keys)."""
        return {
            "updates": self.updates,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "dense_bytes_up": self.dense_bytes_up,
            "energy_mj": self.energy_mj,
            "rejected": dict(self.rejected),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Totals:
        """The totals `to_dict` wrote; a key missing (an older checkpoint) counts from zero."""
        doc = doc or {}
        return cls(
            updates=doc.get("updates", 0),
            bytes_up=doc.get("bytes_up", 0),
            bytes_down=doc.get("bytes_down", 0),
            dense_bytes_up=doc.get("dense_bytes_up", 0),
            energy_mj=doc.get("energy_mj", 0.0),
            rejected=Counter(doc.get("rejected", {})),
        )
