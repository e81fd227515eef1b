"""The agent type-checks against the MicroPython stubs of each supported port (mypy)."""

import os
import subprocess
import sys

import pytest

from tests.mqtt_helpers import ROOT

PORTS = ["esp32", "rp2", "unix"]


@pytest.mark.parametrize("port", PORTS)
def test_agent_typechecks_against_port_stubs(port):
    stubs = ROOT / ".venv" / "stubs" / port
    assert (stubs / "stdlib").is_dir(), "stubs for %s missing: run `make test`" % port
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "device_agent").glob("*.py")
        if p.name != "transport_paho.py"
    )
    env = {**os.environ, "MYPYPATH": "%s:%s" % (stubs, ROOT / ".venv" / "micropython-lib")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "tests/mpy/mypy-agent.ini",
            "--custom-typeshed-dir",
            str(stubs),
            "--cache-dir",
            str(ROOT / ".mypy_cache" / port),
            *files,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
