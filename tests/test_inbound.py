"""What the service reads from devices' JSON: sizes, nesting and numbers checked before use."""

from __future__ import annotations

import json

import pytest

from broker_service.server.inbound import (
    TELEMETRY_KEPT,
    json_depth,
    kept_telemetry,
    read_json_object,
    read_status,
    read_telemetry,
)
from broker_service.server.presence import FleetView
from broker_service.server.rounds import Rejected
from device_agent import limits, reasons


def refused(read, payload: bytes) -> str:
    with pytest.raises(Rejected) as caught:
        read(payload)
    return caught.value.reason


def test_json_depth_counts_brackets_outside_strings():
    assert json_depth("{}", 8) == 1
    assert json_depth('{"a": [1, {"b": []}]}', 8) == 4
    assert json_depth('{"a": "[[[[[[[[[[", "b": "\\"[[["}', 8) == 1
    assert json_depth("[" * 100_000, 8) == 9  # stops as soon as it is over the limit
    assert json_depth("", 8) == 0


def test_deep_nesting_is_refused_before_parsing():
    bomb = b'{"state": "online", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert refused(lambda p: read_json_object(p, 10**6, reasons.BAD_JSON), bomb) == reasons.TOO_DEEP
    deep = "[" * limits.MAX_JSON_DEPTH + "]" * limits.MAX_JSON_DEPTH
    assert read_json_object(('{"a": %s}' % deep[2:-2]).encode(), 4096, reasons.BAD_JSON)


def test_a_status_bomb_or_junk_is_refused_with_its_reason():
    assert refused(read_status, b"[" * 1000) == reasons.TOO_DEEP
    assert refused(read_status, b"x" * (limits.MAX_STATUS + 1)) == reasons.OVERSIZED
    assert refused(read_status, b"\xff\xfe{") == reasons.BAD_JSON
    assert refused(read_status, b"[1, 2]") == reasons.BAD_JSON
    assert refused(read_status, b'{"state": 1}') == reasons.BAD_JSON
    assert refused(read_status, b'{"state": "online", "free_heap": -5}') == reasons.BAD_NUMBER
    assert refused(read_status, b'{"state": "online", "params": 1.5}') == reasons.BAD_NUMBER
    assert read_status(b"") == {}
    birth = {"state": "online", "free_heap": 180000, "model_version": -1, "values": ["f32"]}
    assert read_status(json.dumps(birth).encode()) == birth


@pytest.mark.parametrize(
    "field",
    [
        '"loss_after": ' + "9" * 400,  # OverflowError in float() before
        '"loss_after": NaN',
        '"energy_mj": Infinity',
        '"energy_mj": 1e999',
        '"samples": -1',
        '"compute_ms": "12"',
        '"heap_free": true',
        '"round": 1.5',
        '"round": 4294967296',
    ],
)
def test_telemetry_numbers_are_range_checked(field):
    assert refused(read_telemetry, ('{"round": 1, %s}' % field).encode()) == reasons.BAD_NUMBER


def test_telemetry_keeps_only_the_checked_numbers():
    doc = {
        "round": 3,
        "version": 3,
        "samples": 30,
        "loss_after": 0.25,
        "heap_free": None,
        "rejected": {"model:bad_magic": 1},
        "device": "d1",
        "unknown": 1e300,
    }
    assert read_telemetry(json.dumps(doc).encode()) == {
        "round": 3,
        "version": 3,
        "samples": 30.0,
        "loss_after": 0.25,
    }
    assert refused(read_telemetry, b"not json") == reasons.BAD_TELEMETRY
    assert refused(read_telemetry, b"[" * 20) == reasons.TOO_DEEP


def test_fleet_view_counts_an_unreadable_status_as_offline():
    fleet = FleetView()
    assert fleet.update("d1", b'{"state": "online"}').online
    assert fleet.update("d1", b"[" * 100_000).online is False
    assert fleet.online() == []


def test_a_device_entry_keeps_only_the_status_fields_used():
    """The FleetView keeps state, model version and free heap of a birth, not the document."""
    view = FleetView()
    birth = {"state": "online", "model_version": 3, "free_heap": 90_000, "board": "esp32"}
    birth.update({"extra_%d" % i: "x" * 20 for i in range(10)})
    changed = view.update("d1", json.dumps(birth).encode())
    assert changed is not None and changed.online
    assert view.devices["d1"].info == {"state": "online", "model_version": 3, "free_heap": 90_000}
    assert view.update("d1", b"") is not None and view.devices["d1"].info == {}
    assert view.online() == []


def test_the_kept_telemetry_is_what_closing_a_round_reads():
    doc = read_telemetry(json.dumps({"round": 4, "loss_after": 0.25, "energy_mj": 1.5}).encode())
    assert kept_telemetry(doc) == {"round": 4, "loss_after": 0.25, "energy_mj": 1.5}
    assert set(kept_telemetry(read_telemetry(b'{"round": 4, "nnz": 9}'))) <= set(TELEMETRY_KEPT)
