"""A device's projected battery life: what the device states (birth, asleep status), what the
service reads and refuses, the projection (observe.battery_life), the `battery` point, the
retained battery document and the `tinymetafed status` column, the report's panel."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from broker_service.observe import battery_life as bl
from broker_service.observe.digest import digest
from broker_service.observe.metrics import LineFileSink, read_points
from broker_service.observe.recorder import Recorder
from broker_service.observe.report_energy import battery_days, energy_view
from broker_service.observe.status import (
    battery_doc,
    battery_topic,
    render_text,
    snapshot,
)
from broker_service.server.inbound import read_status, read_telemetry
from broker_service.server.presence import FleetView, kept_status
from broker_service.server.rounds import Rejected
from broker_service.server.totals import Totals
from device_agent import battery, reasons, reports
from device_agent.energy import PROFILES, listen_energy_mj, radio_mj
from device_agent.sleepy import asleep_status

CELL = (2000.0, 3.7, 0.8)
BASE = "tinymetafed/default"


def wake_doc(wake: int, wakes: int = 1, sensor: int = 60, **extra) -> dict:
    doc = {
        "wake": wake,
        "wakes": wakes,
        "sensor_wakes": sensor,
        "bytes_sent": 400,
        "bytes_received": 5000,
        "compute_ms": 200,
        "wake_ms": 2500,
    }
    doc.update(extra)
    return doc


# -- the device's side --


class _Plan:
    n_params = 10
    n_global = 10


def test_a_birth_states_the_battery_only_when_the_config_has_one():
    plain = json.loads(reports.birth("d-1", "esp32", "sine", _Plan, 3))
    assert "battery" not in plain and "energy_profile" not in plain
    cell = {"mah": 1200, "volts": 3.7, "usable": 0.9, "note": "not sent"}
    doc = json.loads(reports.birth("d-1", "esp32", "sine", _Plan, 3, cell, "esp32"))
    assert doc["battery"] == {"mah": 1200, "volts": 3.7, "usable": 0.9}
    assert doc["energy_profile"] == "esp32"
    info = read_status(json.dumps(doc).encode())
    assert kept_status(info)["battery"] == (1200, 3.7, 0.9)


def test_the_asleep_status_states_both_periods():
    doc = json.loads(asleep_status("d-1", 3600, 60))
    assert (doc["state"], doc["wake_s"], doc["sense_s"]) == ("asleep", 3600, 60)
    assert read_status(asleep_status("d-1", 3600, 60).encode())["sense_s"] == 60


# -- hostile values --


def status_with(**fields) -> bytes:
    doc = {"state": "online", "device": "d-1", "energy_profile": "nrf52840"}
    doc["battery"] = {"mah": 2000, "volts": 3.7, "usable": 0.8}
    doc.update(fields)
    return json.dumps(doc).encode()


def refused_reason(payload: bytes) -> str:
    with pytest.raises(Rejected) as caught:
        read_status(payload)
    return caught.value.reason


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"battery": {"mah": -1, "volts": 3.7, "usable": 0.8}}, reasons.BAD_NUMBER),
        ({"battery": {"mah": 0, "volts": 3.7, "usable": 0.8}}, reasons.BAD_NUMBER),
        ({"battery": {"mah": 1e300, "volts": 3.7, "usable": 0.8}}, reasons.BAD_NUMBER),
        ({"battery": {"mah": "2000", "volts": 3.7, "usable": 0.8}}, reasons.BAD_NUMBER),
        ({"battery": {"mah": True, "volts": 3.7, "usable": 0.8}}, reasons.BAD_NUMBER),
        ({"battery": {"mah": 2000, "volts": 3.7, "usable": 1.5}}, reasons.BAD_NUMBER),
        ({"battery": {"mah": 2000, "volts": 3.7}}, reasons.BAD_NUMBER),
        ({"battery": [2000, 3.7, 0.8]}, reasons.BAD_JSON),
        ({"energy_profile": 7}, reasons.BAD_JSON),
        ({"energy_profile": "x" * 100}, reasons.BAD_JSON),
        ({"sense_s": -60}, reasons.BAD_NUMBER),
    ],
)
def test_a_hostile_battery_is_refused_with_its_reason(fields, reason):
    assert refused_reason(status_with(**fields)) == reason


def test_nan_and_infinity_are_refused_before_use():
    text = status_with().decode().replace('"mah": 2000', '"mah": NaN')
    assert refused_reason(text.encode()) == reasons.BAD_NUMBER
    text = status_with().decode().replace('"volts": 3.7', '"volts": Infinity')
    assert refused_reason(text.encode()) == reasons.BAD_NUMBER


def test_an_unreadable_battery_status_counts_as_offline_and_keeps_nothing():
    fleet = FleetView()
    fleet.update("d-1", status_with(battery={"mah": -5, "volts": 3.7, "usable": 0.8}))
    assert fleet.devices["d-1"].info == {} and not fleet.devices["d-1"].online


def test_a_hostile_wake_counter_in_telemetry_is_refused():
    with pytest.raises(Rejected) as caught:
        read_telemetry(json.dumps({"wake": -3, "wake_ms": 10}).encode())
    assert caught.value.reason == reasons.BAD_NUMBER
    with pytest.raises(Rejected):
        read_telemetry(b'{"wakes": "many"}')
    kept = read_telemetry(json.dumps(wake_doc(4)).encode())
    assert kept["wake"] == 4 and kept["sensor_wakes"] == 60 and kept["wake_ms"] == 2500


def test_a_value_the_projection_cannot_use_is_ignored():
    assert bl.read_battery({"mah": 2000, "volts": 3.7, "usable": 2}) is None
    assert bl.read_battery({"mah": math.nan, "volts": 3.7, "usable": 0.5}) is None
    assert bl.read_battery("2000 mAh") is None
    e = bl.DeviceEnergy()
    e.status({"energy_profile": "nrf52840", "battery": (2000, 3.7, 0.8), "wake_s": -1})
    assert e.wake_s is None
    e.telemetry({"wake": "x", "energy_mj": math.inf}, 0.0)  # neither a wake nor a round
    assert e.priced == 0 and e.rounds == 0


# -- the projection --


def test_a_measured_training_wake_is_priced_part_by_part():
    board = PROFILES["esp32"]
    mj, seconds = bl.training_wake_mj(board, 400, 5000, 200, 2500)
    parts = battery.training_wake_parts(board, battery.round_work(0, 0, 0, 0))
    before = parts["wake"][0] + parts["associate"][0]
    v = board["supply_v"]
    expected = before + v * board["cpu_ma"] * 0.2 + v * board["wait_ma"] * 2.3
    expected += radio_mj(400 + bl.WAKE_DOCUMENT_BYTES, 5000, board, messages_up=4, messages_down=2)
    assert mj == pytest.approx(expected)
    assert seconds == pytest.approx(parts["wake"][1] + parts["associate"][1] + 2.5)
    assert bl.training_wake_mj(board, 400, 5000, 200, 5000)[0] > mj  # a longer wake costs more
    nrf = PROFILES["nrf52840"]  # its CPU draws more than its radio waiting on BLE
    base = bl.training_wake_mj(nrf, 400, 5000, 200, 2500)[0]
    assert bl.training_wake_mj(nrf, 400, 5000, 300, 2500)[0] > base


def test_a_sleeping_device_is_projected_from_its_schedule_until_it_is_measured():
    e = bl.DeviceEnergy()
    assert e.status({"energy_profile": "nrf52840", "battery": CELL})
    e.telemetry(wake_doc(10), 1000.0)
    assert bl.projection(e) is None  # no schedule and one wake: nothing to project
    e.status({"state": "asleep", "wake_s": 3600, "sense_s": 60})
    p = bl.projection(e)
    assert p.basis == bl.SCHEDULE
    assert (p.training_wakes_per_day, p.sensor_wakes_per_day) == (24, 1440)
    board = PROFILES["nrf52840"]
    wake = bl.training_wake_mj(board, 400, 5000, 200, 2500)
    day = bl.sleeping_day(board, 24, 1440, wake, bl.sensor_wake_mj(board))
    assert p.day_mj == pytest.approx(day)
    assert p.days == pytest.approx(battery.battery_days(day, *CELL))
    assert p.wake_mj == pytest.approx(wake[0])
    # two more training wakes over an hour: twice the stated rate, measured
    e.telemetry(wake_doc(12, wakes=2, sensor=30), 1000.0 + 3600)
    m = bl.projection(e)
    assert m.basis == bl.MEASURED and m.training_wakes_per_day == pytest.approx(48)
    assert m.sensor_wakes_per_day == pytest.approx(48 * (60 + 30) / 3)
    assert m.days < p.days


def test_a_fresh_state_restarts_the_wake_counter_measurement():
    e = bl.DeviceEnergy(profile="esp32", battery=CELL, wake_s=600)
    e.telemetry(wake_doc(50), 0.0)
    e.telemetry(wake_doc(52), 100.0)
    assert bl.projection(e).basis == bl.MEASURED
    e.telemetry(wake_doc(1), 200.0)  # the device's state read as fresh: its counter restarted
    assert e.first_wake == (200.0, 1) and bl.projection(e).basis == bl.SCHEDULE


def test_a_connected_device_pays_its_listening_day_and_its_measured_rounds():
    e = bl.DeviceEnergy()
    e.status({"energy_profile": "esp32", "battery": CELL, "state": "online"})
    idle = bl.projection(e)
    board = PROFILES["esp32"]
    assert idle.basis == bl.LISTENING
    assert idle.day_mj == pytest.approx(listen_energy_mj(0, bl.DAY_S, board))
    assert idle.days == pytest.approx(battery.battery_days(idle.day_mj, *CELL))
    for i in range(5):  # a round every 10 s, 2 mJ each
        e.telemetry({"round": i, "energy_mj": 2.0}, 10.0 * i)
    p = bl.projection(e)
    assert p.basis == bl.MEASURED and p.rounds_per_day == pytest.approx(8640)
    assert p.day_mj == pytest.approx(idle.day_mj + 8640 * 2.0)


def test_no_battery_or_an_unknown_board_has_no_projection():
    assert bl.projection(bl.DeviceEnergy(profile="esp32")) is None
    assert bl.projection(bl.DeviceEnergy(profile="z80", battery=CELL)) is None
    assert bl.projection(bl.DeviceEnergy(battery=CELL)) is None


def test_a_bigger_battery_lasts_longer_in_proportion():
    small = bl.DeviceEnergy(profile="rp2040", battery=(1000.0, 3.7, 0.8), wake_s=3600)
    big = bl.DeviceEnergy(profile="rp2040", battery=(3000.0, 3.7, 0.8), wake_s=3600)
    for e in (small, big):
        e.telemetry(wake_doc(1), 0.0)
    assert bl.projection(big).days == pytest.approx(3 * bl.projection(small).days)


# -- the service: points, the retained document, status, report --


def recorder_with(path):
    published = {}
    service = SimpleNamespace(
        mqtt=SimpleNamespace(publish=lambda t, p, qos, retain: published.update({t: p})),
        topics=SimpleNamespace(base=BASE),
        ledger=None,
        total_rounds=4,
        use_case=SimpleNamespace(metric="mse", higher_is_better=False),
        totals=Totals(),
    )
    recorder = Recorder(LineFileSink(path), "default", "sine", "tinymetafed")
    recorder.attach(service)  # type: ignore[arg-type]
    return recorder, published


def test_the_recorder_writes_battery_points_and_publishes_the_projections(tmp_path):
    recorder, published = recorder_with(tmp_path / "m.lp")
    recorder.presence("plain", True, {"free_heap": 1000})  # mains-powered: not followed
    recorder.presence("cell", True, kept_status(json.loads(status_with())))
    recorder.device_telemetry("cell", {"round": 0, "energy_mj": 1.5})
    recorder.presence("sleepy", True, {"energy_profile": "esp32", "battery": CELL})
    recorder.device_telemetry("sleepy", wake_doc(3))
    recorder.presence("sleepy", False, {"state": "asleep", "wake_s": 3600, "sense_s": 60})
    assert set(recorder.energy) == {"cell", "sleepy"}
    points = [p for p in read_points(tmp_path / "m.lp") if p.measurement == "battery"]
    assert {p.tags["device"] for p in points} == {"cell", "sleepy"}
    assert all(p.fields["battery_days"] > 0 for p in points)
    assert points[-1].fields["basis"] == bl.SCHEDULE and points[-1].tags["use_case"] == "sine"
    recorder._publish(1, None)
    doc = json.loads(published[battery_topic(BASE)])
    assert set(doc["devices"]) == {"cell", "sleepy"}
    assert doc["devices"]["sleepy"]["basis"] == bl.SCHEDULE
    published.clear()
    recorder._publish(2, None)  # unchanged: not published again
    assert battery_topic(BASE) not in published
    d = digest(read_points(tmp_path / "m.lp"))
    assert set(battery_days(d)) == {"cell", "sleepy"}
    view = energy_view(d)
    assert any(t.label == "shortest projected battery life" for t in view.tiles)
    assert any(p.title.startswith("projected battery life per device") for p in view.panels)


def test_a_report_without_batteries_has_no_battery_panel(tmp_path):
    recorder, _ = recorder_with(tmp_path / "m.lp")
    recorder.presence("plain", True, {"free_heap": 1000})
    view = energy_view(digest(read_points(tmp_path / "m.lp")))
    assert not any("battery" in t.label for t in view.tiles)
    assert not any("battery" in p.title for p in view.panels)


def birth(device: str) -> bytes:
    return json.dumps({"state": "online", "device": device, "board": "esp32"}).encode()


def test_status_has_a_battery_column_only_for_a_fleet_with_batteries():
    messages = {BASE + "/devices/d1/status": birth("d1"), BASE + "/devices/d2/status": birth("d2")}
    plain = snapshot(BASE, messages, now=0)
    assert all(r["battery_days"] is None for r in plain["devices"])
    text = render_text(plain)
    assert "battery" not in text
    projections = {
        "d1": bl.Projection(412.34, 1.0, bl.MEASURED),
        "d3": bl.Projection(3.14, 1.0, bl.SCHEDULE),
    }
    messages[battery_topic(BASE)] = json.dumps(battery_doc(projections)).encode()
    messages[BASE + "/devices/d3/status"] = b'{"state": "asleep", "wake_s": 3600}'
    snap = snapshot(BASE, messages, now=0)
    rows = {r["device"]: r for r in snap["devices"]}
    assert (rows["d1"]["battery_days"], rows["d1"]["battery_basis"]) == (412.3, bl.MEASURED)
    assert rows["d2"]["battery_days"] is None
    text = render_text(snap)
    header = next(line for line in text.splitlines() if "presence" in line)
    assert header.split()[-1] == "battery"
    assert "412 d" in text and "~3.1 d" in text
    d2 = next(line for line in text.splitlines() if line.startswith("d2"))
    assert d2.split()[-1] == "-"


def test_status_ignores_a_malformed_battery_document():
    messages = {BASE + "/devices/d1/status": birth("d1")}
    for junk in (b"[1, 2]", b'{"devices": 5}', b'{"devices": {"d1": {"days": "long"}}}', b"\xff"):
        messages[battery_topic(BASE)] = junk
        snap = snapshot(BASE, messages, now=0)
        assert snap["devices"][0]["battery_days"] is None
        assert "battery" not in render_text(snap)
