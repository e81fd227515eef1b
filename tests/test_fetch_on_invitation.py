"""Only the cohort receives the model, measured at a real mosquitto: a fleet behind a
byte-counting proxy (benchmarks.downlink, small), the service's own downlink accounting
against what the broker sent the devices."""

import json
import subprocess
import sys

from tests.mqtt_helpers import ROOT


def test_the_broker_sends_the_model_to_the_cohort_only_and_the_service_counts_it(tmp_path):
    out = tmp_path / "downlink.json"
    args = ["--devices", "6", "--cohort", "2", "--rounds", "3", "--values", "int8"]
    subprocess.run(
        [sys.executable, "-m", "benchmarks.downlink", *args, "--json", str(out)],
        check=True,
        cwd=ROOT,
        timeout=240,
        capture_output=True,
    )
    (run,) = json.loads(out.read_text())["runs"]
    assert run["rounds"] == 3 and run["updates"] == 6
    per_round = run["broker_to_devices_per_round"]
    # the cohort's models, commands and acknowledgements; far from every device's copy
    assert run["cohort_times_model_per_round"] < per_round
    assert per_round < run["cohort_times_model_per_round"] + 2 * 400
    assert per_round < run["every_device_times_model_per_round"]
    assert abs(run["service_vs_broker"] - 1) <= 0.05 and run["within_tolerance"]
    assert run["sys_bytes_sent_all_clients"] > run["broker_to_devices_bytes"]
