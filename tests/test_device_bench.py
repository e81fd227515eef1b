"""`device_agent.bench`: a full round of every default model inside a 256 KB MicroPython heap."""

import json
import subprocess
import sys

import pytest

from broker_service.testing.session import micropython_exe
from tests.mqtt_helpers import ROOT

KEYS = {"use_case", "params", "macs_per_sample", "step_ms", "peak_heap_bytes", "payload_bytes"}


@pytest.mark.parametrize("use_case", ["sine", "omniglot", "kws", "occupancy"])
def test_board_bench_fits_256k_and_matches_cpython(use_case):
    cmd = ["-m", "device_agent.bench", use_case, "10", "20"]
    mp = subprocess.run(
        [micropython_exe(), "-X", "heapsize=256K", *cmd],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    py = subprocess.run(
        [sys.executable, *cmd], cwd=ROOT, check=True, capture_output=True, text=True, timeout=300
    )
    a, b = json.loads(mp.stdout), json.loads(py.stdout)
    assert set(a) >= KEYS and a["impl"] == "micropython"
    assert 0 < a["peak_heap_bytes"] <= 256 * 1024
    assert a["step_ms"] > 0
    assert (
        a["adapt_step_macs"] == a["macs_per_sample"]
        and 0 < a["recon_step_macs"] < a["adapt_step_macs"]
    )
    # the default round: 10 reconstruction and 20 adaptation steps
    recon = 10 * a["recon_step_macs"]
    assert a["round_macs"] == recon + 20 * a["adapt_step_macs"]
    same = ("params", "macs_per_sample", "payload_bytes", "nnz", "round_macs", "model_bytes")
    for key in same + ("command_bytes", "recon_step_macs", "adapt_step_macs", "adapt_step_params"):
        assert a[key] == b[key], key
