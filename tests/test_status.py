"""`tinymetafed status`: the fleet from the retained topics, as JSON, plain text and rich; against
a running service and fleet on a real mosquitto."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from types import SimpleNamespace

import paho.mqtt.client as mqtt

from broker_service.observe.status import (
    attention_order,
    progress_doc,
    progress_topic,
    render_rich,
    render_text,
    snapshot,
)
from broker_service.server.totals import Totals
from broker_service.testing.waiting import wait_until
from broker_service.usecases.sine import SineUseCase
from device_agent import reasons
from tests.mqtt_helpers import ROOT

BASE = "tinymetafed/default"


def birth(device: str, heap: int | None = None, state: str = "online") -> bytes:
    doc = {"state": state, "device": device, "board": "esp32", "firmware": "micropython 1.27.0"}
    if heap is not None:
        doc["free_heap"] = heap
    return json.dumps(doc).encode()


def progress(rounds_done: int = 7) -> bytes:
    report = SimpleNamespace(
        round=rounds_done - 1,
        participants=["a", "b"],
        late=["c"],
        rejected={"late": 1},
        seconds=2.5,
    )
    totals = Totals(updates=14, bytes_up=5000, bytes_down=90000, energy_mj=12.5)
    totals.rejected.update({reasons.BAD_SIGNATURE: 2})
    doc = progress_doc(
        {"fleet": "default", "use_case": "sine", "algorithm": "tinymetafed"},
        rounds_done,
        40,
        "mse",
        {"value": 2.5, "ci95": 0.3, "round": rounds_done - 1},
        totals.to_dict(),
        report,
    )
    return json.dumps(doc).encode()


MESSAGES = {
    BASE + "/service/status": b'{"state": "online"}',
    progress_topic(BASE): progress(),
    BASE + "/devices/d1/status": birth("d1", 90_000),
    BASE + "/devices/d2/status": birth("d2", 40_000),
    BASE + "/devices/d2/telemetry": b'{"round": 6, "heap_free": 35000}',
    BASE + "/devices/d3/status": birth("d3", state="offline"),
    BASE + "/devices/d4/status": b"",  # a cleared retained status
    "tinymetafed/other/devices/x/status": birth("x"),
}


def test_snapshot_reads_the_service_and_every_device():
    snap = snapshot(BASE, MESSAGES, now=1e10)
    service = snap["service"]
    assert service["state"] == "online" and service["round"] == 7 and service["rounds"] == 40
    assert service["metric"] == {"name": "mse", "value": 2.5, "ci95": 0.3, "round": 6}
    assert service["totals"]["rejected"] == {reasons.BAD_SIGNATURE: 2}
    assert service["last_round"]["late"] == 1
    assert [d["device"] for d in snap["devices"]] == ["d1", "d2", "d3", "d4"]
    assert (snap["online"], snap["offline"]) == (2, 2)
    d2 = snap["devices"][1]
    assert d2["free_heap"] == 35000 and d2["last_round"] == 6  # telemetry is newer than birth
    assert snap["devices"][0]["free_heap"] == 90_000 and snap["devices"][0]["board"] == "esp32"


def test_progress_before_the_first_round_has_no_last_round():
    doc = progress_doc({"fleet": "f"}, 0, 10, "accuracy", {"value": 0.5, "round": -1}, {})
    assert doc["round"] == 0 and doc["last_round"] is None and doc["metric"]["value"] == 0.5


def test_a_fleet_without_service_shows_unknown_and_no_progress():
    snap = snapshot(BASE, {BASE + "/devices/d1/status": birth("d1")}, now=0)
    assert snap["service"]["state"] == "unknown" and "round" not in snap["service"]
    assert "no progress published" in render_text(snap)


def test_offline_and_low_heap_devices_come_first():
    rows = snapshot(BASE, MESSAGES, now=0)["devices"]
    assert [r["device"] for r in attention_order(rows)] == ["d3", "d4", "d2", "d1"]


def test_plain_text_names_the_figures_and_cuts_long_fleets():
    text = render_text(snapshot(BASE, MESSAGES, now=0), max_rows=3)
    assert "round 7 of 40" in text and "mse 2.5000 ± 0.3000" in text
    assert "%s 2" % reasons.BAD_SIGNATURE in text and "2 online, 2 offline" in text
    assert "OFFLINE" in text and "35.0 kB" in text
    assert "and 1 more" in text and "d1 " not in text  # the healthiest device is cut


def test_rich_view_renders_the_same_figures():
    from rich.console import Console

    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(render_rich(snapshot(BASE, MESSAGES, now=0)))
    text = console.export_text()
    assert "round 7 of 40" in text and "2 online" in text and "OFFLINE" in text


def status(port: int, *flags: str) -> str:
    """What `tinymetafed status` prints (it exits 0)."""
    proc = subprocess.run(
        [sys.executable, "-m", "broker_service.cli", "status"]
        + ["--broker", "mqtt://127.0.0.1:%d" % port, *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def status_json(port: int) -> dict:
    return json.loads(status(port, "--json"))


def test_status_shows_a_running_service_and_its_fleet(session, tmp_path):
    use_case = SineUseCase(fleet_size=4)
    fleet = session.fleet(use_case, 4)
    cfg = session.config(rounds=400, cohort=3, eval_every=2, eval_devices=4, round_timeout=20.0)
    service = session.service(cfg, tmp_path / "service.log")
    thread, _ = session.background(service)
    wait_until(lambda: service.round >= 2, 60, "round 2")
    hostile = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile")
    hostile.connect("127.0.0.1", session.port)
    hostile.loop_start()
    hostile.publish(service.topics.update(use_case.device_ids[0]), b"\x00" * 40, qos=1)
    wait_until(lambda: service.totals.rejected, 60, "the hostile update's rejection")
    hostile_reasons = dict(service.totals.rejected)
    counted = service.round
    wait_until(lambda: service.round > counted + 1, 60, "a round after the rejection")
    hostile.loop_stop()
    snap = status_json(session.port)
    s = snap["service"]
    assert s["state"] == "online" and (s["use_case"], s["algorithm"]) == ("sine", "tinymetafed")
    assert counted + 1 < s["round"] <= service.round and s["rounds"] == 400
    assert s["metric"]["name"] == "mse" and s["metric"]["ci95"] > 0
    # the hostile update, and on a loaded machine perhaps an honest one that came too late
    assert sum(hostile_reasons.values()) == 1 and s["totals"]["updates"] > 0
    assert all(s["totals"]["rejected"].get(r, 0) >= n for r, n in hostile_reasons.items())
    assert (snap["online"], snap["offline"]) == (4, 0)
    assert [d["device"] for d in snap["devices"]] == use_case.device_ids[:4]
    assert all(d["board"] for d in snap["devices"])
    text = status(session.port, "--once", "--plain")
    assert "service online  sine / tinymetafed  round" in text and "of 400" in text
    assert "4 online, 0 offline" in text and use_case.device_ids[3] in text
    service.stop.set()
    thread.join(60)
    fleet.stop()
    wait_until(lambda: status_json(session.port)["offline"] == 4, 30, "the fleet's goodbyes")
    snap = status_json(session.port)
    assert snap["service"]["state"] == "offline" and snap["service"]["round"] == service.round
