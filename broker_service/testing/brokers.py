"""Real brokers for tests and benchmarks, started on 127.0.0.1 at free ports and stopped
afterwards: mosquitto, a three-node nats-server cluster speaking MQTT, and a byte-counting TCP
proxy."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

from broker_service.testing.waiting import wait_until


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


class NatsCluster:
    """Three nats-server nodes on 127.0.0.1 (free ports, data in `folder`), routed into one
    JetStream cluster, each speaking MQTT 3.1.1; `mqtt_ports[i]` is node i+1's MQTT port.

    nats-server serves MQTT only with a server name and JetStream (it keeps MQTT sessions,
    retained messages and QoS 1 messages in JetStream streams); `start()` returns once every node
    reports itself healthy, that is once the JetStream cluster has a leader. `mqtt_extra` goes
    into each node's `mqtt {}` block (e.g. `ack_wait: "3s"`, the QoS 1 redelivery delay)."""

    NODES = 3

    def __init__(self, folder: Path, mqtt_extra: str = ""):
        exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
        assert Path(exe).exists(), "nats-server not installed: run `make test` (apt nats-server)"
        self.exe = exe
        self.folder = folder
        ports = [[free_port() for _ in range(4)] for _ in range(self.NODES)]
        self.mqtt_ports = [p[0] for p in ports]
        self.http_ports = [p[1] for p in ports]
        routes = ", ".join("nats-route://127.0.0.1:%d" % p[3] for p in ports)
        self.confs = []
        extra = ", " + mqtt_extra if mqtt_extra else ""
        for i, (mqtt_port, http_port, client_port, route_port) in enumerate(ports):
            store = folder / ("n%d" % (i + 1))
            store.mkdir(parents=True, exist_ok=True)
            conf = folder / ("n%d.conf" % (i + 1))
            conf.write_text(
                'server_name: "n%d"\nlisten: "127.0.0.1:%d"\nhttp: "127.0.0.1:%d"\n'
                'jetstream { store_dir: "%s" }\nmqtt { listen: "127.0.0.1:%d"%s }\n'
                'cluster { name: "tinymetafed", listen: "127.0.0.1:%d", routes: [%s] }\n'
                % (i + 1, client_port, http_port, store, mqtt_port, extra, route_port, routes)
            )
            self.confs.append(conf)
        self.procs: list[subprocess.Popen | None] = [None] * self.NODES

    def start(self, timeout: float = 20.0) -> NatsCluster:
        """Start the nodes and wait until each one's health endpoint says ok."""
        for i, conf in enumerate(self.confs):
            with open(self.folder / ("n%d.log" % (i + 1)), "ab") as log:
                self.procs[i] = subprocess.Popen(
                    [self.exe, "-c", str(conf)], stdout=log, stderr=log
                )
        for i in range(self.NODES):
            wait_until(
                lambda i=i: self.healthy(i), timeout, "nats node %d healthy" % (i + 1), interval=0.1
            )
            wait_port(self.mqtt_ports[i], timeout)
        return self

    def healthy(self, i: int) -> bool:
        """True when node i's /healthz answers ok (JetStream is up and the cluster has a leader)."""
        url = "http://127.0.0.1:%d/healthz" % self.http_ports[i]
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                return json.loads(answer.read()).get("status") == "ok"
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL)."""
        for i, proc in enumerate(self.procs):
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            self.procs[i] = None


class CountingProxy:
    """A TCP proxy on 127.0.0.1 in front of a broker that counts the bytes the broker sends to
    the clients connected through it (`sent_to_clients`) and the bytes they send (`from_clients`):
    a device's link as the broker uses it. One thread per direction of each connection."""

    def __init__(self, target_port: int, port: int | None = None):
        self.target_port = target_port
        self.port = port or free_port()
        self.sent_to_clients = 0
        self.from_clients = 0
        self.lock = threading.Lock()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", self.port))
        self.server.listen(256)
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b, down in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(a, b, down), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    if down:
                        self.sent_to_clients += len(data)
                    else:
                        self.from_clients += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def counts(self) -> tuple[int, int]:
        """(bytes sent to the clients, bytes received from them) so far."""
        with self.lock:
            return self.sent_to_clients, self.from_clients

    def close(self) -> None:
        """Stop accepting (open connections end when either side closes)."""
        self.running = False
        self.server.close()
