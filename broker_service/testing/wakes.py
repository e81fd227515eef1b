"""A sleeping device's wakes, for a test or a benchmark: `device_agent.wake` run once a wake.

Each wake is a process of its own (`micropython -m device_agent.wake CONFIG sensor|train`, or
CPython's), as a board's deep sleep restarts it: nothing but the flash files (the config's
"sleep" block names them) survives from one wake to the next. The output of every wake of a
device is appended to folder/DEVICE.wakes.log.

    device = SleepyDevice(config, folder, "micropython")
    device.sense(10)            # ten sensor wakes, one after the other
    assert device.train() == 0  # one training wake, waited for
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from broker_service.testing.session import ROOT, micropython_exe, micropython_path, stop_process
from broker_service.testing.waiting import wait_for_text

WAKE_SECONDS = 120.0
"""The longest a wake may take before a test gives up on it."""


def sleepy_config(device_id: str, port: int, folder: Path, **extra) -> dict:
    """A sine device's config on 127.0.0.1:`port` whose flash files are in `folder`; `extra`
    keys are merged in ("sleep" into the sleep block)."""
    sleep = {
        "ring": 32,
        "state": str(folder / ("%s.state" % device_id)),
        "ring_file": str(folder / ("%s.ring" % device_id)),
        "order_ms": 5000,
        "receipt_ms": 2000,
        **extra.pop("sleep", {}),
    }
    return {
        "device_id": device_id,
        "fleet": "test",
        "broker": {"host": "127.0.0.1", "port": port},
        "sleep": sleep,
        **extra,
    }


class SleepyDevice:
    """The wakes of one device under `impl` ("micropython" or "cpython"); `config` is written to
    folder/DEVICE.wake.json before every wake (a test may change it between wakes)."""

    def __init__(self, config: dict, folder: Path, impl: str = "micropython", heap: str = "256K"):
        self.config = config
        self.folder = Path(folder)
        self.impl = impl
        self.heap = heap
        self.log = self.folder / ("%s.wakes.log" % config["device_id"])
        self.path = self.folder / ("%s.wake.json" % config["device_id"])

    def start(self, kind: str) -> subprocess.Popen:
        """A wake of `kind` (sensor, train, auto), started; its output appended to the log."""
        self.path.write_text(json.dumps(self.config))
        if self.impl == "micropython":
            exe = [micropython_exe(), "-X", "heapsize=" + self.heap]
            env = {**os.environ, "MICROPYPATH": micropython_path()}
        else:
            exe = [sys.executable]
            env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        cmd = [*exe, "-m", "device_agent.wake", str(self.path), kind]
        with open(self.log, "a") as log:
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def run(self, kind: str, timeout: float = WAKE_SECONDS) -> int:
        """One wake of `kind`, waited for; its exit status."""
        proc = self.start(kind)
        try:
            return proc.wait(timeout)
        finally:
            stop_process(proc)

    def sense(self, n: int = 1) -> None:
        """`n` sensor wakes in a row; each must succeed."""
        for _ in range(n):
            status = self.run("sensor")
            assert status == 0, "sensor wake failed (%d): %s" % (status, self.tail())

    def train(self, timeout: float = WAKE_SECONDS) -> int:
        """One training wake, waited for; its exit status."""
        return self.run("train", timeout)

    def wait_log(self, text: str, timeout: float = WAKE_SECONDS, after: int = 0) -> str:
        """Wait until the wakes' log holds `text` past its first `after` characters."""
        return wait_for_text(self.log, text, timeout, after)

    def tail(self, chars: int = 2000) -> str:
        """The end of the wakes' log, for an assertion's message."""
        try:
            return self.log.read_text()[-chars:]
        except FileNotFoundError:
            return ""

    def cycle(self, sensor_wakes: int) -> int:
        """`sensor_wakes` sensor wakes, then a training wake: its exit status."""
        self.sense(sensor_wakes)
        return self.train()
