"""The service's live view of the fleet, built from the devices' retained status messages.

A device is online while its last status says "online"; one whose last status says "asleep"
(`{"state": "asleep", "wake_s": N}`, a device that deep-sleeps between the wakes of an
asynchronous session) is a sleeping member: not online, so no round invites it, yet not lost.

Memory grows with the fleet, so a device's entry keeps only the status fields the service uses
(`KEPT_STATUS`), not the whole birth document (benchmarks/scale.py measures the bytes per known
device).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from broker_service.server.inbound import BATTERY_KEYS, read_status
from broker_service.server.rounds import Rejected

KEPT_STATUS = (
    "state",
    "model_version",
    "free_heap",
    "wake_s",
    "sense_s",
    "energy_profile",
    "battery",
)
"""The fields of a status document a device's entry keeps (presence, the model it holds, the
heap recorded on a change, a sleeping device's announced sleep and sensor wakes, and what its
battery life is projected with: its energy profile and battery, which only a device on a
battery states)."""
ASLEEP = "asleep"
"""The state of a device's status while it deep-sleeps (an asynchronous session's member)."""


def kept_status(info: dict) -> dict:
    """The KEPT_STATUS fields of a status document already read (`inbound.read_status`); the
    state string is interned, so thousands of devices share one "online"."""
    kept = {key: info[key] for key in KEPT_STATUS if key in info}
    for key in ("state", "energy_profile"):
        if isinstance(kept.get(key), str):
            kept[key] = sys.intern(kept[key])
    cell = kept.get("battery")
    if isinstance(cell, dict):  # checked by read_status: (mah, volts, usable), smaller
        kept["battery"] = tuple(cell.get(key) for key in BATTERY_KEYS)
    return kept


@dataclass(slots=True)
class DeviceState:
    """What a device last said about itself (the KEPT_STATUS fields of its status)."""

    device: str
    online: bool
    info: dict = field(default_factory=dict)
    since: float = 0.0

    @property
    def asleep(self) -> bool:
        """True while the device's last status said it sleeps."""
        return self.info.get("state") == ASLEEP


class FleetView:
    """Devices known to the service; `online()` are those whose last status said so."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceState] = {}

    def update(self, device: str, payload: bytes) -> DeviceState | None:
        """Apply a status message; returns the new state when presence changed, else None.

        An empty payload (a cleared retained message) or one `inbound.read_status` refuses
        counts as offline.
        """
        try:
            info = read_status(payload)
        except Rejected:
            info = {}
        return self.apply(device, info)

    def apply(self, device: str, info: dict) -> DeviceState | None:
        """Apply a status document already read (`inbound.read_status`); returns the new state
        when presence changed (online, or asleep), else None. Online only when its state says
        "online"."""
        online = info.get("state") == "online"
        old = self.devices.get(device)
        state = DeviceState(device, online, kept_status(info), time.time())
        self.devices[device] = state
        if old is None or old.online != online or old.asleep != state.asleep:
            return state
        return None

    def online(self) -> list[str]:
        """Online device ids, sorted (a stable order for seeded cohort sampling)."""
        return sorted(d for d, s in self.devices.items() if s.online)

    def asleep(self) -> list[str]:
        """The ids of the devices that said they sleep, sorted."""
        return sorted(d for d, s in self.devices.items() if s.asleep)
