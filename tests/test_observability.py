"""Metrics into real stores, the Grafana dashboard's queries on real InfluxDB, the report."""

import json
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from broker_service.observe.metrics import read_points
from broker_service.testing.session import Session
from broker_service.testing.waiting import wait_for_text, wait_until
from broker_service.usecases.sine import SineUseCase
from tests.browser import looks_drawn, screenshot
from tests.fleet_points import write_session
from tests.mqtt_helpers import ROOT
from tests.stores import InfluxDB1, VictoriaMetrics

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tinymetafed.json"


def run_session(folder: Path, port: int, influx_url: str, rounds: int = 8, during=None) -> dict:
    """A session with 5 simulated agents, a micropython agent on a battery and one hostile
    update, on the broker at `port`; the agents are stopped when it ends."""
    use_case = SineUseCase(fleet_size=6)
    with Session(folder, port) as session:
        session.fleet(use_case, 5)
        board = {"device_id": use_case.device_ids[5], "use_case": "sine", "battery": {"mah": 1200}}
        session.agent(board, "micropython")  # on a battery: its projected life is recorded
        cfg = session.config(
            rounds=rounds,
            cohort=6,
            eval_every=2,
            eval_devices=4,
            influx_url=influx_url,
            round_timeout=20.0,
        )
        service = session.service(cfg, folder / "service.log")
        thread, result = session.background(service)
        wait_until(lambda: service.ledger is not None, 60, "the first round to open")
        import paho.mqtt.client as mqtt

        hostile = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile")
        hostile.connect("127.0.0.1", port)
        hostile.loop_start()
        # under an id the round did not invite: whether it came before or after an invited
        # device's own update, no invited device's turn is refused (that panel stays empty)
        hostile.publish(service.topics.update("intruder-1"), b"\x00" * 40, qos=1).wait_for_publish()
        hostile.loop_stop()
        if during:
            during(service)
        thread.join(180)
    assert result["rounds"] == rounds
    return result


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    folder = tmp_path_factory.mktemp("observability")
    with Session.with_mosquitto(folder) as broker:
        store = VictoriaMetrics(folder).start()
        broker.on_close(store.stop)
        summary = run_session(folder, broker.port, store.url)
        yield folder, summary, store.export(expected_points(summary["metrics"]))


def expected_series(metrics_file: str) -> Counter:
    """(series name, tags) -> number of points, from the local line-protocol file."""
    counts = Counter()
    for p in read_points(metrics_file):
        for key in p.fields:
            counts[("%s_%s" % (p.measurement, key), tuple(sorted(p.tags.items())))] += 1
    return counts


def expected_points(metrics_file: str) -> int:
    """How many values the store must hold once every point of the file has arrived."""
    return sum(expected_series(metrics_file).values())


def stored_series(export: list[dict]) -> Counter:
    counts = Counter()
    for row in export:
        metric = dict(row["metric"])
        name = metric.pop("__name__")
        metric.pop("db", None)
        counts[(name, tuple(sorted(metric.items())))] += len(row["values"])
        assert len(set(row["timestamps"])) == len(row["timestamps"]), name
    return counts


def test_service_writes_every_series_through_influxdb_client(session):
    folder, summary, export = session
    expected = expected_series(summary["metrics"])
    names = {name for name, _ in expected}
    for must in (
        "round_metric",
        "round_bytes_up",
        "round_bytes_down",
        "round_participants",
        "round_saving",
        "round_outer_step",
        "round_energy_mj_total",
        "round_rejected",
        "device_update_energy_mj",
        "device_update_payload_bytes",
        "device_update_heap_free",
        "presence_online",
        "battery_battery_days",
    ):
        assert must in names, must
    assert any(name.startswith("round_rejected_") for name in names)
    assert stored_series(export) == expected


def test_store_outage_every_point_arrives_once(tmp_path):
    with Session.with_mosquitto(tmp_path) as started:
        store = VictoriaMetrics(tmp_path).start()
        started.on_close(store.stop)

        def outage(service):
            wait_until(lambda: service.round >= 2, 120, "round 2")
            store.stop()
            wait_for_text(tmp_path / "service.log", "event=metrics_store_unavailable", 60)
            wait_until(lambda: service.round >= 6, 120, "round 6 (four rounds into the outage)")
            assert service.round < 40, "the session ended during the outage"
            store.start()

        summary = run_session(tmp_path, started.port, store.url, rounds=40, during=outage)
        export = store.export(expected_points(summary["metrics"]))
    log = (tmp_path / "service.log").read_text()
    assert "event=metrics_store_unavailable" in log and "event=metrics_store_back" in log
    assert stored_series(export) == expected_series(summary["metrics"])


def _panel_queries():
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["query"]


NEEDS_TROUBLE = {"Rejected updates of invited devices"}
"""Panels that show data only once something went wrong (an invited device's update refused):
checked on the synthetic session, which has late, rejected and offline devices."""


def _run_panels(db, points: list, use_case: str, interval: str) -> dict[str, bool]:
    """{panel title: whether its queries returned data} over the time span of `points`; every
    query must run without an error."""
    lo = min(p.ts_ns for p in points) - 60_000_000_000
    hi = max(p.ts_ns for p in points) + 60_000_000_000
    found: dict[str, bool] = {}
    for title, query in _panel_queries():
        q = (
            query.replace("$fleet", "default")
            .replace("$use_case", use_case)
            .replace("$timeFilter", "time >= %d AND time <= %d" % (lo, hi))
            .replace("$__interval", interval)
        )
        result = db.query(q, "tinymetafed")["results"][0]
        assert "error" not in result, (title, q, result)
        found[title] = found.get(title, True) and bool(result.get("series"))
    return found


def test_every_dashboard_query_returns_data_on_real_influxdb(session, tmp_path):
    _, summary, _ = session
    synthetic = write_session(tmp_path / "synthetic.lp", devices=20, rounds=20, cohort=6)
    db = InfluxDB1(tmp_path).start()
    try:
        db.query("CREATE DATABASE tinymetafed")
        for metrics in (summary["metrics"], synthetic):
            db.write("tinymetafed", Path(metrics).read_bytes())
        dashboard = json.loads(DASHBOARD.read_text())
        for var in dashboard["templating"]["list"]:
            query = var["query"].replace("$fleet", "default")
            values = db.query(query, "tinymetafed")["results"][0]
            assert values.get("series"), var["name"]
        real = _run_panels(db, read_points(summary["metrics"]), "sine", "100ms")
        troubled = _run_panels(db, read_points(synthetic), "kws", "10s")
    finally:
        db.stop()
    assert [t for t, data in real.items() if not data] == sorted(NEEDS_TROUBLE)
    assert [t for t, data in troubled.items() if not data] == []


def test_dashboard_typechecks_against_grafana_schema():
    tsc = ROOT / ".venv" / "node" / "node_modules" / ".bin" / "tsc"
    assert tsc.exists(), "typescript missing: run `make test` (npm @grafana/schema typescript)"
    proc = subprocess.run(
        [str(tsc), "-p", "tests/grafana/tsconfig.json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    panel_types = {p["type"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert panel_types <= {"row", "timeseries", "stat", "table", "state-timeline"}


def test_the_dashboard_has_the_reports_views():
    """Grafana parity: a row a view of the report, in the report's order, each with panels."""
    from broker_service.observe.report import VIEWS

    panels = json.loads(DASHBOARD.read_text())["panels"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["Session"] + [title for _, title in VIEWS]
    titles = {p["title"] for p in panels}
    for needed in (
        "Metric on new devices (95 % CI)",
        "Bytes per round: up, down, and up if dense",
        "Fleet energy per round",
        "Energy per update across devices",
        "Participation, device × round",
        "Presence, device × time",
        "Lowest free heap per device (the 30 lowest)",
        "Projected battery life per device (the 30 shortest)",
    ):
        assert needed in titles, needed


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images = []
        self.sections = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "section":
            self.sections.append(attrs.get("id"))


def test_report_is_valid_html_with_a_plot_per_view_and_renders(session, tmp_path):
    _, summary, _ = session
    out = tmp_path / "report.html"
    bench = tmp_path / "bench.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "broker_service.cli",
            "bench",
            "--use-case",
            "sine",
            "--quick",
            "--quiet",
            "--algorithms",
            "tinymetafed,no_federation",
            "--json",
            str(bench),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "broker_service.cli",
            "report",
            "--metrics",
            summary["metrics"],
            "--out",
            str(out),
            "--bench",
            str(bench),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "metric on new devices (mse)" in proc.stdout
    page = out.read_text()
    parser = _Images()
    parser.feed(page)
    parser.close()
    assert parser.sections == [
        "convergence",
        "communication",
        "energy",
        "participation",
        "presence",
    ]
    assert len(parser.images) >= 6 and all(
        s.startswith("data:image/png;base64,") for s in parser.images
    )
    assert "use case <b>sine</b> · algorithm <b>tinymetafed</b> · fleet <b>default</b>" in page
    assert "mse on new devices (95 % CI)" in page and "not of this session" not in page
    assert "device × round (6 devices)" in page and "presence, device × time" in page
    assert "<table>" in page
    image = screenshot(out, tmp_path / "report.png", height=5000)
    deviation, colours = looks_drawn(image)
    assert deviation > 20 and colours >= 6, (deviation, colours)  # plots and text, not blank
