"""A device that deep-sleeps between the wakes of an asynchronous session says so in its retained
status (`{"state": "asleep", "wake_s": N}`): the service's fleet view and `tinymetafed status`
count it as a sleeping member, neither online (no round invites it) nor offline."""

import json

import pytest

from broker_service.observe.status import render_text, snapshot
from broker_service.server.inbound import read_status
from broker_service.server.presence import FleetView
from broker_service.server.rounds import Rejected

BASE = "tinymetafed/default"


def status(state: str, **fields) -> bytes:
    return json.dumps({"state": state, **fields}).encode()


def test_the_fleet_view_keeps_a_sleeping_device_apart():
    fleet = FleetView()
    assert fleet.update("a", status("online")).online
    changed = fleet.update("a", status("asleep", wake_s=600))
    assert changed is not None and changed.asleep and not changed.online
    assert changed.info["wake_s"] == 600
    assert fleet.update("a", status("asleep", wake_s=900)) is None  # still asleep
    fleet.update("b", status("offline"))
    assert fleet.online() == [] and fleet.asleep() == ["a"]
    assert fleet.update("a", status("online")).online and fleet.asleep() == []


@pytest.mark.parametrize("wake", [-1, "soon", 1e30, True])
def test_a_bad_wake_is_refused(wake):
    with pytest.raises(Rejected, match="bad_number"):
        read_status(status("asleep", wake_s=wake))
    assert read_status(status("asleep", wake_s=12.5))["wake_s"] == 12.5


def test_status_counts_sleeping_devices_apart_from_offline_ones():
    messages = {
        BASE + "/devices/a/status": status("online"),
        BASE + "/devices/b/status": status("asleep", wake_s=300),
        BASE + "/devices/c/status": status("offline"),
    }
    snap = snapshot(BASE, messages, now=0.0)
    assert (snap["online"], snap["asleep"], snap["offline"]) == (1, 1, 1)
    text = render_text(snap)
    assert "devices 1 online, 1 asleep, 1 offline" in text
    assert "asleep 300s" in text
    rows = [line.split()[0] for line in text.splitlines() if line[:2] in ("a ", "b ", "c ")]
    assert rows[0] == "c"  # the offline device first: the sleeping one is not lost
