"""Real brokers for tests: mosquitto started on 127.0.0.1 at a free port, stopped afterwards."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from tests.helpers import wait_until


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Block until something listens on 127.0.0.1:port."""

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout, "a listener on 127.0.0.1:%d" % port, interval=0.05)


class Mosquitto:
    """A mosquitto process with its own config in `folder`; `stop()`/`start()` keep the port."""

    def __init__(self, folder: Path, port: int | None = None, extra: str = ""):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        assert Path(exe).exists(), "mosquitto not installed: run `make test` (apt mosquitto)"
        self.exe = exe
        self.port = port or free_port()
        self.folder = folder
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            "user root\nlistener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n%s" % (self.port, extra)
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        """Start (or restart) the broker and wait until it listens."""
        with open(self.folder / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
