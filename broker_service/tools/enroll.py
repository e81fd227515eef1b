"""Device enrollment: broker credentials through `mosquitto_passwd`, and the board's config.

The broker user name is the device id, which the ACL's `pattern` lines (%u) confine to the
device's own topics.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

from device_agent.config import make_config


class EnrollError(RuntimeError):
    """Enrollment failed; the message says why."""


def add_broker_user(passwd_file: Path, user: str, password: str) -> None:
    """Add or update `user` in a mosquitto password file (created when missing)."""
    exe = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(exe).exists():
        raise EnrollError("mosquitto_passwd not found (Debian package mosquitto)")
    passwd_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "-b", str(passwd_file), user, password]
    if not passwd_file.exists():
        cmd.insert(1, "-c")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EnrollError("mosquitto_passwd failed: %s" % (proc.stderr.strip() or proc.stdout))
    passwd_file.chmod(0o644)  # mosquitto drops to its own user and must read it


def enroll(
    device_id: str,
    passwd_file: Path,
    broker_host: str,
    broker_port: int = 1883,
    use_case: str = "sine",
    fleet: str = "default",
    password: str | None = None,
) -> dict:
    """Create the device's credentials and return its (checked) board config."""
    password = password or secrets.token_urlsafe(18)
    config = make_config(
        {
            "device_id": device_id,
            "fleet": fleet,
            "use_case": use_case,
            "broker": {
                "host": broker_host,
                "port": broker_port,
                "user": device_id,
                "password": password,
            },
            "data": {"kind": "file", "path": "samples.csv"},
            "wifi": {"ssid": "my-network", "password": "change-me"},
        }
    )
    add_broker_user(passwd_file, device_id, password)
    return config
