"""The command line end to end: a quick bench, evaluating its checkpoint, clear data errors."""

import json
import subprocess
import sys

import pytest

KEYS = {
    "final_metric",
    "final_metric_ci95",
    "rounds_to_target",
    "bytes_up_per_update",
    "bytes_down_per_update",
    "energy_mj_per_update",
    "macs_per_update",
    "curve_std",
    "curve",
}
ALGORITHMS = {"tinymetafed", "tinyreptile", "reptile", "fedavg", "no_federation"}


def tinymetafed(*args, check=True):
    return subprocess.run(
        [sys.executable, "-m", "broker_service.cli", *args],
        check=check,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def quick_sine(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = tinymetafed(
        "bench",
        "--use-case",
        "sine",
        "--quick",
        "--json",
        str(out / "b.json"),
        "--checkpoint-dir",
        str(out / "ckpt"),
    )
    return out, proc, json.loads((out / "b.json").read_text())


def test_quick_bench_writes_the_documented_json(quick_sine):
    _, proc, doc = quick_sine
    assert doc["use_case"] == "sine" and doc["metric"] == "mse"
    assert set(doc["algorithms"]) == ALGORITHMS
    for name, entry in doc["algorithms"].items():
        assert set(entry) >= KEYS, name
        assert entry["curve"][0][0] == 0 and entry["curve"][-1][0] == doc["rounds"]
    tmf, tr = doc["algorithms"]["tinymetafed"], doc["algorithms"]["tinyreptile"]
    assert tr["bytes_up_per_update"] / tmf["bytes_up_per_update"] >= 8
    assert tmf["bytes_down_per_update"] < tr["bytes_down_per_update"]
    assert "tinymetafed" in proc.stdout and "upload saving" in proc.stdout


def test_evaluate_reads_the_bench_checkpoint(quick_sine, tmp_path):
    out, _, doc = quick_sine
    ckpt = out / "ckpt" / "sine-tinymetafed.ckpt.json"
    proc = tinymetafed("evaluate", "--checkpoint", str(ckpt), "--json", str(tmp_path / "e.json"))
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["algorithm"] == "tinymetafed" and result["new_devices"] == 20
    assert result["final_metric"] == pytest.approx(
        doc["algorithms"]["tinymetafed"]["final_metric"], rel=1e-6
    )
    assert "new sine devices" in proc.stdout


@pytest.mark.parametrize(
    "use_case,expected",
    [
        ("omniglot", "omniglot/images_background"),
        ("kws", "fsdd/recordings"),
        ("occupancy", "occupancy/"),
    ],
)
def test_missing_data_is_a_clear_error(use_case, expected, tmp_path):
    proc = tinymetafed(
        "bench", "--use-case", use_case, "--quick", "--data-dir", str(tmp_path), check=False
    )
    assert proc.returncode == 2
    assert expected in proc.stderr and str(tmp_path) in proc.stderr


def test_quick_bench_on_real_data(data_dir, tmp_path):
    tinymetafed(
        "bench",
        "--use-case",
        "occupancy",
        "--quick",
        "--quiet",
        "--data-dir",
        str(data_dir),
        "--json",
        str(tmp_path / "o.json"),
    )
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["metric"] == "accuracy"
    assert all(0.0 <= a["final_metric"] <= 1.0 for a in doc["algorithms"].values())
