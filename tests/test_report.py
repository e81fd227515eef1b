"""The report: its pure parts (flatness, bands, spans, grids), the recorder's participation,
session and progress, and the page for 20 and for 1,000 devices, rendered in headless Chromium."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from broker_service.observe.charts import human, time_unit
from broker_service.observe.digest import (
    MAX_ROWS,
    digest,
    is_flat,
    lowest_heap,
    most,
    online_spans,
    outcome_counts,
    outcome_grid,
    outcome_labels,
    per_round,
    quantile_bands,
    settled_online,
)
from broker_service.observe.metrics import Point, read_points
from broker_service.observe.recorder import outcomes
from broker_service.observe.report import build_views, write_report
from device_agent import reasons
from tests.browser import looks_drawn, screenshot
from tests.fleet_points import write_session


@pytest.mark.parametrize(
    "values,flat",
    [
        ([12.54, 12.56, 12.60], True),  # the upload saving's noise
        ([0.6158, 0.6159, 0.6160], True),
        ([2.58, 2.55, 2.51], False),  # a metric that moves 3 %
        ([0.0, 0.0], True),
        ([0.0, 1e-9], False),
        ([5.0], True),
        ([], True),
    ],
)
def test_flat_series_are_told_apart(values, flat):
    assert is_flat(values) is flat


def test_per_round_increments_of_a_cumulative_series():
    assert per_round(np.array([3.0, 6.5, 9.0])).tolist() == [3.0, 3.5, 2.5]


def test_quantile_bands_by_round():
    x, bands = quantile_bands({2: [1.0, 2.0, 3.0, 4.0, 5.0], 0: [7.0], 1: []})
    assert x.tolist() == [0.0, 2.0]
    assert bands[:, 1].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0] and bands[:, 0].tolist() == [7.0] * 5


def test_presence_spans_and_the_settled_online_count():
    events = [(10, 1, None), (20, 0, None), (25, 1, 5000)]
    assert online_spans(events, 40) == [(10, 20, True), (20, 25, False), (25, 40, True)]
    presence = {"a": events, "b": [(12, 1, None)]}
    assert settled_online(presence).tolist() == [2.0, 1.0, 2.0]  # from b's birth on


def test_participation_grid_and_counts():
    part = {
        ("a", 0): ("accepted", None),
        ("b", 0): ("late", None),
        ("a", 1): ("rejected", reasons.BAD_SIGNATURE),
        ("c", 1): ("rejected", reasons.NORM_BOUND),
    }
    labels = outcome_labels(part)
    assert labels == [
        "accepted",
        "late",
        "rejected: %s" % reasons.BAD_SIGNATURE,
        "rejected: %s" % reasons.NORM_BOUND,
    ]
    grid = outcome_grid(part, ["a", "b", "c"], [0, 1], labels)
    assert grid.tolist() == [[1, 3], [2, 0], [0, 4]]
    rounds, counts = outcome_counts(part, labels)
    assert rounds == [0, 1] and counts["late"] == [1, 0] and counts[labels[3]] == [0, 1]


def test_most_picks_the_highest_scores_and_lists_them_by_id():
    assert most({"z": 5, "a": 1, "m": 5, "q": 0}, 2) == ["m", "z"]


def test_lowest_heap_takes_telemetry_and_birth():
    updates = [Point("device_update", {"device": "a"}, {"heap_free": 30000.0})]
    presence = {"a": [(1, 1, 40000)], "b": [(1, 1, 25000)], "c": [(1, 1, None)]}
    assert lowest_heap(updates, presence) == {"a": 30000.0, "b": 25000.0}


def test_numbers_read_well():
    assert human(1850, "B") == "1.85 kB" and human(954050, "B") == "954 kB"
    assert human(121.95, "mJ") == "122 mJ" and human(6682, "mJ") == "6.68 J"
    assert time_unit(8.7) == (1.0, "s") and time_unit(1800)[1] == "min"
    assert time_unit(3 * 86400)[1] == "d"


def test_outcomes_of_a_closed_round():
    ledger = SimpleNamespace(
        invited={"a", "b", "c", "d"}, accepted={"a": 1, "d": 1}, refused={"b": "bad", "d": "x"}
    )
    assert outcomes(ledger) == {
        "a": ("accepted", None),
        "b": ("rejected", "bad"),
        "c": ("late", None),
        "d": ("accepted", None),  # an accepted update wins over a refused duplicate
    }


@pytest.fixture(scope="module")
def fleets(tmp_path_factory):
    """Metrics of a 20-device and a 1,000-device session."""
    folder = tmp_path_factory.mktemp("fleets")
    return {
        n: write_session(folder / ("fleet-%d.lp" % n), n, 30, 5 if n == 20 else 60)
        for n in (20, 1000)
    }


def test_the_recorder_writes_session_participation_and_ci(fleets):
    points = read_points(fleets[20])
    session = [p for p in points if p.measurement == "session"]
    assert len(session) == 1 and session[0].fields["metric_name"] == "accuracy"
    assert session[0].fields["rounds_planned"] == 30 and session[0].fields["eval_devices"] == 40
    rounds = [p for p in points if p.measurement == "round" and "metric" in p.fields]
    assert all(p.fields["metric_ci95"] > 0 for p in rounds)
    part = [p for p in points if p.measurement == "participation"]
    assert len(part) == 30 * 5
    assert {p.fields["outcome"] for p in part} <= {"accepted", "late", "rejected"}
    assert all(
        p.fields["reason"] == reasons.BAD_SIGNATURE
        for p in part
        if p.fields["outcome"] == "rejected"
    )


def _titles(views):
    return {v.key: [p.title for p in v.panels] for v in views}


def test_twenty_devices_get_a_row_each(fleets):
    titles = _titles(build_views(digest(read_points(fleets[20]))))
    assert titles["participation"][0] == "device × round (20 devices)"
    assert titles["presence"][0] == "presence, device × time (20 devices)"
    assert titles["presence"][1] == "lowest free heap per device"


def test_a_thousand_devices_are_shown_in_aggregate(fleets):
    views = build_views(digest(read_points(fleets[1000])))
    titles = _titles(views)
    invited = len({p.tags["device"] for p in read_points(fleets[1000]) if "outcome" in p.fields})
    assert invited > MAX_ROWS
    assert titles["participation"][:2] == [
        "invitations per round by outcome (%d devices)" % invited,
        "the %d devices most often late or rejected" % MAX_ROWS,
    ]
    assert "the %d devices offline longest" % MAX_ROWS in titles["presence"]
    assert "lowest free heap per device (the 30 lowest of 1000)" in titles["presence"]
    assert not any("device × time" in t for t in titles["presence"])
    assert "energy per update across devices" in titles["energy"]


def test_flat_series_become_numbers_not_plots(fleets):
    views = {v.key: v for v in build_views(digest(read_points(fleets[20])))}
    communication = views["communication"]
    assert communication.tiles[0].label == "fewer bytes up than dense float32 updates"
    assert communication.tiles[0].note.startswith("flat:")
    assert not any("saving" in p.title for p in communication.panels)


def test_baselines_need_a_bench_of_the_same_use_case(fleets, tmp_path):
    d = digest(read_points(fleets[20]))
    bench = {"use_case": "sine", "algorithms": {"fedavg": {"curve": [[0, 1.0], [5, 0.9]]}}}
    assert "not of this session" in build_views(d, bench)[0].note
    bench["use_case"] = "kws"
    assert build_views(d, bench)[0].note.startswith("Dashed: the bench's curves")
    assert build_views(d, None)[0].note == ""


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections: list[str] = []
        self.images = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "img" and attrs.get("src", "").startswith("data:image/png;base64,"):
            self.images += 1


@pytest.mark.parametrize("devices", [20, 1000])
def test_the_page_renders_in_chromium(fleets, devices, tmp_path):
    out = tmp_path / "report.html"
    lines = write_report(fleets[devices], out)
    updates = sum(1 for p in read_points(fleets[devices]) if p.measurement == "device_update")
    assert lines[0] == "rounds: 30, updates: %d" % updates
    page = _Page()
    page.feed(out.read_text())
    assert page.sections == ["convergence", "communication", "energy", "participation", "presence"]
    assert page.images >= 8
    text = out.read_text()
    assert "use case <b>kws</b> · algorithm <b>tinymetafed</b> · fleet <b>default</b>" in text
    image = screenshot(out, tmp_path / "report.png", height=6000)
    deviation, colours = looks_drawn(image)
    assert image.height > 2000 and deviation > 20 and colours >= 6, (deviation, colours)


def test_an_empty_metrics_file_still_makes_a_page(tmp_path):
    metrics = tmp_path / "metrics.lp"
    metrics.write_text("")
    out = tmp_path / "report.html"
    assert write_report(metrics, out) == ["no rounds in the metrics file"]
    assert Path(out).read_text().count("<section") == 5


def test_a_sink_that_cannot_store_never_stops_the_recorder():
    class FullDisk:
        def write(self, lines):
            raise OSError(28, "No space left on device")

    from broker_service.observe.recorder import Recorder

    recorder = Recorder(FullDisk(), "default", "sine", "tinymetafed")  # type: ignore[arg-type]
    recorder.presence("d1", True, {"free_heap": 1000})
    recorder.evaluated(0, 1.5)
    assert recorder.dropped == 2
