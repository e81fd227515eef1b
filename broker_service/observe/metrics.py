"""Metrics: InfluxDB line protocol, a local file sink (the embedded default) and an InfluxDB v2
sink that batches, retries with backoff and spools to disk through outages.

Schema (docs/metrics.md): measurements `round`, `device_update` and `presence`; tags stay
low-cardinality (fleet, use_case, algorithm, device); the round number is a field.
"""

from __future__ import annotations

import math
import numbers
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

COMPACT_AFTER_BYTES = 1 << 20
"""A spool rewrites itself once this much delivered data lies before its unsent lines."""


def _escape(text: str, chars: str) -> str:
    for ch in "\\" + chars:
        text = text.replace(ch, "\\" + ch)
    return text


def _field_value(value) -> str:
    """A field value in line protocol; numpy scalars are numbers like Python's own."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return "%di" % int(value)
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return '"%s"' % str(value).replace("\\", "\\\\").replace('"', '\\"')


def line(measurement: str, tags: dict, fields: dict, ts_ns: int) -> str:
    """One point in InfluxDB line protocol; None fields are left out, NaN/inf too."""
    head = _escape(measurement, ", ")
    for key in sorted(tags):
        if tags[key] not in (None, ""):
            head += ",%s=%s" % (_escape(key, ",= "), _escape(str(tags[key]), ",= "))
    parts = []
    for key in sorted(fields):
        value = fields[key]
        if value is None or (
            isinstance(value, numbers.Real)
            and not isinstance(value, numbers.Integral)
            and not math.isfinite(value)
        ):
            continue
        parts.append("%s=%s" % (_escape(key, ",= "), _field_value(value)))
    if not parts:
        raise ValueError("a point needs at least one field: %s" % measurement)
    return "%s %s %d" % (head, ",".join(parts), ts_ns)


@dataclass
class Point:
    """A parsed line-protocol point (what `report` reads back)."""

    measurement: str
    tags: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)
    ts_ns: int = 0


def _split(text: str, sep: str, strings: bool = False) -> list[str]:
    """Split at unescaped `sep`; with `strings`, a '"' right after '=' opens a string value
    (in which `sep` does not split) that the next unescaped '"' closes."""
    out, cur, i, quoted = [], "", 0, False
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur += text[i : i + 2]
            i += 2
            continue
        if strings and ch == '"' and (quoted or cur.endswith("=")):
            quoted = not quoted
        if ch == sep and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur)
    return out


def _unescape(text: str) -> str:
    out, i = "", 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out += text[i + 1]
            i += 2
        else:
            out += text[i]
            i += 1
    return out


def _parse_value(text: str):
    if text.startswith('"'):
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if text in ("true", "false"):
        return text == "true"
    if text.endswith("i"):
        return int(text[:-1])
    return float(text)


def parse_line(text: str) -> Point:
    """Parse one line written by `line` (ValueError on anything else)."""
    text = text.rstrip("\r\n")  # only the line end: other white space may be escaped data
    head = _split(text, " ")[0]
    rest = text[len(head) + 1 :]
    fields_text, _, ts = rest.rpartition(" ")
    name, *tag_parts = _split(head, ",")
    tags = {}
    for part in tag_parts:
        key, value = _split(part, "=")
        tags[_unescape(key)] = _unescape(value)
    fields = {}
    for part in _split(fields_text, ",", True):
        key = _split(part, "=", True)[0]
        value = part[len(key) + 1 :]
        fields[_unescape(key)] = _parse_value(value)
    return Point(_unescape(name), tags, fields, int(ts))


def read_points(path: str | Path) -> list[Point]:
    """Every point of a line-protocol file, skipping blank and comment lines."""
    points = []
    for raw in Path(path).read_text().split("\n"):  # not splitlines: data may hold U+2028
        if raw.strip() and not raw.startswith("#"):
            points.append(parse_line(raw))
    return points


class Sink:
    """Where points go; `write` must never block the caller."""

    def write(self, lines: Iterable[str]) -> None:
        raise NotImplementedError

    def close(self, timeout: float = 10.0) -> None:
        """Flush what can be flushed within `timeout` seconds."""


class LineFileSink(Sink):
    """Appends points to a local line-protocol file (`influx write -f FILE` imports it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def write(self, lines: Iterable[str]) -> None:
        text = "".join(item + "\n" for item in lines)
        with self.lock, open(self.path, "a") as f:
            f.write(text)


class Spool:
    """A bounded on-disk queue of lines: append at the tail, consume from the head in order.

    The data file plus a committed byte offset; when more than `max_bytes` wait, the oldest lines
    are dropped (counted). Compacts itself when the consumed head grows large.
    """

    def __init__(self, folder: str | Path, max_bytes: int = 16 << 20):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data = self.folder / "spool.lp"
        self.offset_file = self.folder / "spool.offset"
        self.max_bytes = max_bytes
        self.dropped = 0
        self.data.touch()
        self.offset = int(self.offset_file.read_text() or 0) if self.offset_file.exists() else 0

    def pending_bytes(self) -> int:
        return self.data.stat().st_size - self.offset

    def append(self, lines: list[str]) -> int:
        """Append lines durably; returns how many old lines were dropped to stay bounded."""
        with open(self.data, "a") as f:
            f.write("".join(item + "\n" for item in lines))
            f.flush()
            os.fsync(f.fileno())
        return self._bound()

    def _bound(self) -> int:
        excess = self.pending_bytes() - self.max_bytes
        dropped = 0
        if excess > 0:
            with open(self.data, "rb") as f:
                f.seek(self.offset)
                while excess > 0:
                    raw = f.readline()
                    if not raw:
                        break
                    excess -= len(raw)
                    self.offset += len(raw)
                    dropped += 1
            self._commit()
        self.dropped += dropped
        return dropped

    def peek(self, max_lines: int) -> tuple[list[str], int]:
        """Up to max_lines lines from the head and the byte length they take."""
        lines, size = [], 0
        with open(self.data, "rb") as f:
            f.seek(self.offset)
            for _ in range(max_lines):
                raw = f.readline()
                if not raw:
                    break
                if not raw.endswith(b"\n"):
                    break  # a torn last line is left for later
                lines.append(raw.decode().rstrip("\n"))
                size += len(raw)
        return lines, size

    def consume(self, size: int) -> None:
        """Mark `size` bytes from the head as delivered."""
        self.offset += size
        self._commit()
        if self.offset > COMPACT_AFTER_BYTES and self.offset > self.pending_bytes():
            self._compact()

    def _commit(self) -> None:
        tmp = self.offset_file.with_suffix(".tmp")
        tmp.write_text(str(self.offset))
        os.replace(tmp, self.offset_file)

    def _compact(self) -> None:
        with open(self.data, "rb") as f:
            f.seek(self.offset)
            rest = f.read()
        tmp = self.data.with_suffix(".tmp")
        tmp.write_bytes(rest)
        os.replace(tmp, self.data)
        self.offset = 0
        self._commit()


class InfluxSink(Sink):
    """InfluxDB v2 write API through influxdb-client, from a background thread.

    Points are queued in memory and written in batches; failed batches go to the spool and are
    replayed in order, before anything newer, with exponential backoff; the caller never waits.
    """

    def __init__(
        self,
        url: str,
        token: str,
        org: str,
        bucket: str,
        spool_dir: str | Path,
        batch: int = 500,
        flush_s: float = 1.0,
        max_spool_bytes: int = 16 << 20,
        log: Callable[..., None] | None = None,
        timeout_ms: int = 5000,
    ):
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.client = InfluxDBClient(url=url, token=token, org=org, timeout=timeout_ms)
        self.api = self.client.write_api(write_options=SYNCHRONOUS)
        self.bucket, self.org = bucket, org
        self.batch, self.flush_s = batch, flush_s
        self.spool = Spool(spool_dir, max_spool_bytes)
        self.log = log or (lambda *a, **k: None)
        self.queue: deque[str] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.written = 0
        self.failures = 0
        self.thread = threading.Thread(target=self._loop, name="influx-writer", daemon=True)
        self.thread.start()

    def write(self, lines: Iterable[str]) -> None:
        with self.cond:
            self.queue.extend(lines)
            if len(self.queue) >= self.batch:
                self.cond.notify()

    def _loop(self) -> None:
        backoff = 0.5
        while True:
            with self.cond:
                if not self.queue and not self.stopping:
                    self.cond.wait(self.flush_s)
                fresh = list(self.queue)
                self.queue.clear()
                stopping = self.stopping
            if fresh:
                dropped = self.spool.append(fresh)
                if dropped:
                    self.log("metrics_dropped", points=dropped, total=self.spool.dropped)
            ok = self._drain()
            if stopping and (ok or not self._pending()):
                return
            if not ok:
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                if stopping:
                    return
            else:
                backoff = 0.5

    def _pending(self) -> bool:
        return self.spool.pending_bytes() > 0

    def _drain(self) -> bool:
        """Write the spool from its head until empty; False at the first failure."""
        while True:
            lines, size = self.spool.peek(self.batch)
            if not lines:
                return True
            try:
                self.api.write(bucket=self.bucket, org=self.org, record=lines)
            except Exception as exc:  # noqa: BLE001 - any failure means "retry later"
                self.failures += 1
                if self.failures == 1 or self.failures % 20 == 0:
                    self.log(
                        "metrics_store_unavailable",
                        error=type(exc).__name__,
                        pending_bytes=self.spool.pending_bytes(),
                    )
                return False
            self.spool.consume(size)
            self.written += len(lines)
            if self.failures:
                self.log("metrics_store_back", replayed=len(lines))
                self.failures = 0

    def close(self, timeout: float = 10.0) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout)
        self.client.close()


class Fanout(Sink):
    """Writes to several sinks."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks

    def write(self, lines: Iterable[str]) -> None:
        items = list(lines)
        for sink in self.sinks:
            sink.write(items)

    def close(self, timeout: float = 10.0) -> None:
        for sink in self.sinks:
            sink.close(timeout)
