"""The service's live view of the fleet, built from the devices' retained status messages."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field


@dataclass
class DeviceState:
    """What a device last said about itself."""

    device: str
    online: bool
    info: dict = field(default_factory=dict)
    since: float = 0.0


class FleetView:
    """Devices known to the service; `online()` are those whose last status said so."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceState] = {}

    def update(self, device: str, payload: bytes) -> DeviceState | None:
        """Apply a status message; returns the new state when presence changed, else None.

        An empty payload (a cleared retained message) or an unreadable one counts as offline.
        """
        try:
            info = json.loads(payload) if payload else {}
        except ValueError:
            info = {}
        online = isinstance(info, dict) and info.get("state") == "online"
        old = self.devices.get(device)
        state = DeviceState(device, online, info if isinstance(info, dict) else {}, time.time())
        self.devices[device] = state
        if old is None or old.online != online:
            return state
        return None

    def online(self) -> list[str]:
        """Online device ids, sorted (a stable order for seeded cohort sampling)."""
        return sorted(d for d, s in self.devices.items() if s.online)
