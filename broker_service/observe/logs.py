"""Structured logs: one line an event, `ts=... event=... round=... device=... key=value`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

SECRET_KEYS = {"password", "token", "key", "secret"}


def _value(v) -> str:
    text = str(v)
    if " " in text or "=" in text or '"' in text or not text:
        return '"%s"' % text.replace('"', '\\"')
    return text


class EventLog:
    """Writes logfmt lines to a stream (stderr by default) or appends them to a file at `path`;
    secrets are never written."""

    def __init__(
        self, stream: TextIO | None = None, quiet: bool = False, path: str | Path | None = None
    ):
        self.stream = stream or sys.stderr
        self.path = Path(path) if path else None
        self.quiet = quiet

    def __call__(self, event: str, **fields) -> None:
        if self.quiet:
            return
        parts = ["ts=%.3f" % time.time(), "event=%s" % event]
        for key, value in fields.items():
            if value is None:
                continue
            shown = "***" if key in SECRET_KEYS else _value(value)
            parts.append("%s=%s" % (key, shown))
        line = " ".join(parts) + "\n"
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line)
        else:
            self.stream.write(line)
            self.stream.flush()
