"""Real metric stores for tests: VictoriaMetrics (InfluxDB v2 write API) and InfluxDB 1.x
(InfluxQL), each on 127.0.0.1 at free ports with its data in a temporary folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from broker_service.testing.brokers import free_port, wait_port
from broker_service.testing.waiting import wait_until


def _exe(name: str) -> str:
    found = shutil.which(name) or "/usr/bin/" + name
    assert Path(found).exists(), "%s not installed: run `make test` (Debian package)" % name
    return found


class VictoriaMetrics:
    """`victoria-metrics` reading back at once (-search.latencyOffset=0s)."""

    def __init__(self, folder: Path):
        self.exe = _exe("victoria-metrics")
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def start(self) -> VictoriaMetrics:
        with open(self.folder / "victoria-metrics.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.exe,
                    "-httpListenAddr",
                    "127.0.0.1:%d" % self.port,
                    "-storageDataPath",
                    str(self.folder / "vmdata"),
                    "-search.latencyOffset=0s",
                ],
                stdout=log,
                stderr=log,
            )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.proc = None

    def export(self, points: int, timeout: float = 30.0) -> list[dict]:
        """Every stored series with its values and timestamps, once `points` values are stored.

        A write is searchable only after VictoriaMetrics flushes its in-memory buffers (and
        registers new series), so this asks for a flush (/internal/force_flush) and polls.
        """

        def stored() -> list[dict] | None:
            with urllib.request.urlopen(self.url + "/internal/force_flush", timeout=30) as r:
                assert r.status == 200
            query = urllib.parse.urlencode({"match[]": '{__name__=~".+"}'})
            url = "%s/api/v1/export?%s" % (self.url, query)
            with urllib.request.urlopen(url, timeout=30) as r:
                rows = [json.loads(row) for row in r.read().decode().splitlines() if row.strip()]
            return rows if sum(len(row["values"]) for row in rows) >= points else None

        what = "%d points in VictoriaMetrics" % points
        return wait_until(stored, timeout, what, interval=0.1)


class InfluxDB1:
    """Debian `influxdb` (1.x): v1 /write and InfluxQL /query."""

    def __init__(self, folder: Path):
        self.exe = _exe("influxd")
        self.port = free_port()
        self.folder = folder
        conf = folder / "influxdb.conf"
        conf.write_text(
            'reporting-disabled = true\nbind-address = "127.0.0.1:%d"\n'
            '[meta]\n  dir = "%s"\n[data]\n  dir = "%s"\n  wal-dir = "%s"\n'
            '[http]\n  bind-address = "127.0.0.1:%d"\n  log-enabled = false\n'
            % (free_port(), folder / "meta", folder / "data", folder / "wal", self.port)
        )
        self.conf = conf
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def start(self) -> InfluxDB1:
        with open(self.folder / "influxd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.exe, "-config", str(self.conf)], stdout=log, stderr=log
            )
        wait_port(self.port, 30)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def query(self, q: str, db: str | None = None) -> dict:
        data = {"q": q}
        if db:
            data["db"] = db
        req = urllib.request.Request(self.url + "/query", urllib.parse.urlencode(data).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def write(self, db: str, body: bytes) -> None:
        req = urllib.request.Request("%s/write?db=%s&precision=ns" % (self.url, db), body)
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 204
