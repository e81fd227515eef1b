"""The `tinymetafed` command line: every way to run and use TinyMetaFed from a shell.

Run the whole system on this machine (demo), the aggregation service (serve) and its health check
(health), device agents on CPython (agent, fleet), board files and credentials (device bundle,
device enroll), the benchmark of every algorithm (bench), a saved model on new devices
(evaluate), the HTML report of a session (report), the fleet live from the broker (status), and
ONNX out and in (export, init). A user error (a bad flag, a missing file, a setting that cannot
work) is one line on stderr, `tinymetafed <command>: error: ...`, with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np

from broker_service.core.fewshot import ci95, evaluate_on_episodes
from broker_service.core.hyperparams import settings_for
from broker_service.core.nn import NumpyNet
from broker_service.core.streams import FINAL_EPISODES, named_stream
from broker_service.observe.provenance import load_average, provenance
from broker_service.server import checkpoint
from broker_service.server.config import (
    ENV_PREFIX,
    ConfigError,
    FlagOption,
    ServiceConfig,
    env_name,
    flag_options,
    load_config,
    secret_options,
)
from broker_service.sim import bench, learning
from broker_service.sim.demo_session import DEMO_DEVICES, DEMO_SESSION, OTHER_ROUNDS
from broker_service.tools import bundle
from broker_service.tools.enroll import EnrollError
from broker_service.tools.onnx_io import OnnxError
from broker_service.usecases.base import DataMissingError
from broker_service.usecases.registry import USE_CASES, load_use_case
from device_agent.config import AgentConfigError

DATA_ENV = "TINYMETAFED_DATA"

SERVICE_DEFAULTS = ServiceConfig()


def _data_dir(args: argparse.Namespace) -> str | None:
    return args.data_dir or os.environ.get(DATA_ENV)


def _write_json(path: str | None, doc: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(doc, indent=1) + "\n")
        print("wrote %s" % path)


def _read_json(path: str, what: str):
    """A JSON file's document; a ConfigError naming the file when it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as exc:
        raise ConfigError("%s %s is not valid JSON: %s" % (what, path, exc)) from None


def cmd_bench(args: argparse.Namespace) -> int:
    """Run every algorithm on one use case (or all), on one seed or several, with the settings
    tuned on validation devices; print the tables and the paper's claims, write the JSON."""
    algos = args.algorithms.split(",") if args.algorithms else None
    unknown = sorted(set(algos or ()) - set(bench.ORDER))
    if unknown:
        raise ConfigError(
            "--algorithms: unknown %s; known: %s" % (", ".join(unknown), ",".join(bench.ORDER))
        )
    use_cases = bench.known_use_cases() if args.use_case == "all" else [args.use_case]
    if len(use_cases) > 1 and args.json:
        raise ConfigError("--json takes one use case; use --json-dir with --use-case all")
    seeds = _seed_list(args.seeds) if args.seeds else [args.seed]
    overrides = dict(_parse_setting(text) for text in args.set or [])
    try:
        bench.check_overrides(overrides)
    except ValueError as exc:
        raise ConfigError("--set: %s" % exc) from None
    started = load_average()
    docs = bench.run_benches(
        use_cases,
        _data_dir(args),
        seeds,
        args.rounds,
        args.quick,
        algos,
        args.checkpoint_dir,
        args.workers,
        verbose=not args.quiet,
        tuned_dir=args.tuned_dir,
        ablations=args.ablations,
        overrides=overrides,
    )
    for doc in docs:
        doc["provenance"] = provenance(started)
        if len(docs) > 1:
            print("\n== %s ==" % doc["use_case"])
        print(bench.format_table(doc))
        if not doc["tuned"]["from"]:
            print("settings: untuned defaults (no tuned-%s.json)" % doc["use_case"])
        for line in learning.failures(doc):
            print("warning: does not learn or refused honest updates: %s" % line)
    print("took %.1f s" % docs[0]["seconds"])
    _write_json(args.json, docs[0])
    if args.json_dir:
        for doc in docs:
            _write_json(str(Path(args.json_dir) / ("bench-%s.json" % doc["use_case"])), doc)
    return 0


def _seed_list(text: str) -> list[int]:
    """Seeds from "0,1,2" (or a range "0-2")."""
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return list(range(int(lo), int(hi) + 1))
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError("--seeds: %r is not a list like 0,1,2 or 0-2" % text) from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Measure a saved meta-initialisation on new devices exactly as the bench does."""
    ckpt = checkpoint.load(args.checkpoint)
    use_case_name = args.use_case or ckpt.use_case
    if use_case_name not in USE_CASES:
        raise ConfigError(
            "%s is a %r model; pass --use-case (%s) to measure it on that use case's devices"
            % (args.checkpoint, use_case_name, ", ".join(sorted(USE_CASES)))
        )
    use_case = load_use_case(use_case_name, _data_dir(args), seed=args.seed)
    settings = {**settings_for(use_case_name), **ckpt.settings}
    n = args.devices or int(settings["final_devices"])
    episodes = use_case.new_device_episodes(n, named_stream(args.seed, FINAL_EPISODES))
    values = evaluate_on_episodes(
        NumpyNet(ckpt.spec), ckpt.theta, ckpt.split, episodes, settings, use_case.metric
    )
    ci = ci95(values)
    doc = {
        "checkpoint": str(args.checkpoint),
        "use_case": use_case_name,
        "algorithm": ckpt.algorithm,
        "round": ckpt.round,
        "metric": use_case.metric,
        "new_devices": len(values),
        "final_metric": float(values.mean()),
        "final_metric_ci95": ci,
    }
    print(
        "%s on %d new %s devices: %s = %.4f ± %.4f (95%% CI)"
        % (ckpt.algorithm, len(values), use_case_name, use_case.metric, doc["final_metric"], ci)
    )
    _write_json(args.json, doc)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main command: broker, service and fleet on this machine."""
    from broker_service.sim.demo import run_demo

    summary = run_demo(
        args.use_case,
        args.devices,
        args.rounds,
        args.broker,
        args.out,
        _data_dir(args),
        args.seed,
        not args.no_micropython,
        args.cohort,
    )
    return 0 if summary["rounds"] else 1


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the aggregation service against a broker until its rounds are done (with --standby:
    first wait until the service holding the same state is gone, then take over)."""
    from broker_service.observe.logs import EventLog
    from broker_service.server.service import AggregationService
    from broker_service.server.standby import Standby

    flags: dict = {o.name: getattr(args, o.name) for o in flag_options()}
    flags["settings"] = dict(_parse_setting(s) for s in args.set or [])
    cfg = load_config(args.config, flags)
    log = EventLog()
    lock = Standby(cfg, log).wait() if cfg.standby else None
    try:
        service = AggregationService(cfg, log, lock=lock)
    except USER_ERRORS:
        raise  # says what is wrong already (a state folder in use, a bad checkpoint)
    except ValueError as exc:  # a training setting that cannot work (strategies, bounds)
        raise ConfigError("training settings: %s" % exc) from None
    summary = service.run()
    print(json.dumps(summary, indent=1))
    return 0


def _parse_setting(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as JSON when it parses (numbers, true/false), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError("--set takes KEY=VALUE, got %r" % text)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _agent_config(args: argparse.Namespace, device_id: str, spec: dict) -> dict:
    host, port, tls = ServiceConfig(broker=args.broker).broker_address()
    return {
        "device_id": device_id,
        "fleet": args.fleet,
        "prefix": args.prefix,
        "use_case": args.use_case,
        "spec": spec,
        "broker": {
            "host": host,
            "port": port,
            "ssl": tls,
            "user": args.username,
            "password": os.environ.get(env_name("password")),
        },
    }


def cmd_agent(args: argparse.Namespace) -> int:
    """One CPython agent: trains on a sample file, or on the use case's data for its id."""
    from broker_service.sim.fleet import NumpyRunner
    from device_agent.agent import Agent
    from device_agent.config import make_config
    from device_agent.datasource import FileSource
    from device_agent.model import Plan
    from device_agent.robust import RobustAgent

    use_case = load_use_case(args.use_case, _data_dir(args), seed=args.seed)
    cfg = make_config(_agent_config(args, args.device_id, use_case.spec))
    if args.samples:
        plan = Plan(use_case.spec)
        source = FileSource(args.samples, plan.layers[0].size_in(), plan.loss == "softmax_ce")
        agent = Agent(cfg, source)
    else:
        if args.device_id not in use_case.device_ids:
            raise DataMissingError(
                "device %s is not a %s device (e.g. %s); pass --samples FILE"
                % (args.device_id, args.use_case, use_case.device_ids[0])
            )
        agent = Agent(
            cfg, iter(()), round_runner=NumpyRunner(use_case, NumpyNet(use_case.spec), args.seed)
        )
    RobustAgent(agent).run(args.max_rounds)
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    """N simulated agents in one process against a broker, until Ctrl-C."""
    import time

    from broker_service.sim.fleet import SimulatedFleet

    host, port, _ = ServiceConfig(broker=args.broker).broker_address()
    use_case = load_use_case(args.use_case, _data_dir(args), seed=args.seed)
    fleet = SimulatedFleet(
        host, port, use_case, args.devices, args.seed, args.fleet, args.prefix
    ).start()
    print("%d agents running against %s; Ctrl-C stops them" % (len(fleet.agents), args.broker))
    try:
        while True:
            time.sleep(1)
    finally:
        fleet.stop()


def cmd_device_bundle(args: argparse.Namespace) -> int:
    """Write what goes onto a board (sources or .mpy, main.py, boot.py, config.json)."""
    config = _read_json(args.config, "--config") if args.config else None
    files = bundle.write_bundle(Path(args.out), config, args.mpy, args.arch, args.plain)
    print("wrote %d files to %s" % (len(files), args.out))
    print("copy them onto the board, e.g.: mpremote connect PORT fs cp -r %s/* :" % args.out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report of a metrics file and print the short summary."""
    from broker_service.observe.report import write_report

    for text in write_report(args.metrics, args.out, args.bench):
        print(text)
    print("wrote %s" % args.out)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show the fleet from its retained MQTT topics: the service's state and round, the last
    metric, rejections, and every device online or offline with its board and free heap."""
    from broker_service.observe.status import WatchOptions, watch

    options = WatchOptions(
        broker=args.broker,
        fleet=args.fleet,
        prefix=args.prefix,
        username=args.username,
        password=os.environ.get(env_name("password")),
        ca_file=args.ca_file,
    )
    return watch(options, args.json, args.once, args.interval, plain=args.plain)


def cmd_export(args: argparse.Namespace) -> int:
    """Write a checkpoint's meta-initialisation (and optionally a fitted head) as ONNX."""
    import onnx

    from broker_service.core.fewshot import adapt
    from broker_service.sim.datafiles import read_sample_file
    from broker_service.tools.onnx_io import export_model

    ckpt = checkpoint.load(args.checkpoint)
    net = NumpyNet(ckpt.spec)
    head = "zeros (re-created on each device)"
    theta = np.zeros(net.plan.n_params, dtype=np.float32)
    theta[: len(ckpt.theta)] = ckpt.theta
    if args.with_head_from:
        try:
            xs, ys = read_sample_file(args.with_head_from, net.plan)
        except ValueError as exc:
            raise ConfigError("--with-head-from %s: %s" % (args.with_head_from, exc)) from None
        settings = {**settings_for(ckpt.use_case), **ckpt.settings}
        theta = adapt(net, ckpt.theta, ckpt.split, xs, ys, settings, head_only=True)
        head = "reconstructed on %d support samples" % len(xs)
    meta = {
        "use_case": ckpt.use_case,
        "algorithm": ckpt.algorithm,
        "round": ckpt.round,
        "preprocessing": ckpt.extra.get("preprocessing", {}),
        "head": head,
    }
    onnx.save(export_model(ckpt.spec, theta, meta), args.out)
    print("wrote %s (%s, round %d, head %s)" % (args.out, ckpt.use_case, ckpt.round, head))
    return 0


def _load_onnx(path: str):
    """An ONNX model from a file; an OnnxError when the file is not one."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(path)
    except DecodeError as exc:
        raise OnnxError("%s is not an ONNX model: %s" % (path, exc)) from None


def cmd_init(args: argparse.Namespace) -> int:
    """Turn an ONNX graph of supported layers into a model spec and initial checkpoint."""
    from broker_service.tools.onnx_io import import_model

    spec, theta = import_model(_load_onnx(args.from_onnx))
    ckpt = checkpoint.Checkpoint(
        spec=spec,
        theta=theta,
        round=0,
        algorithm="init",
        use_case=args.use_case or "custom",
        split=False,
    )
    checkpoint.save(args.out, ckpt)
    print(json.dumps(spec, indent=1))
    print("wrote %s (%d parameters)" % (args.out, len(theta)))
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the service's heartbeat is recent (the container health check)."""
    import time

    path = Path(args.state_dir) / "heartbeat"
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        print("unhealthy: no heartbeat at %s" % path, file=sys.stderr)
        return 1
    if age > args.max_age:
        print("unhealthy: heartbeat %.0f s old" % age, file=sys.stderr)
        return 1
    print("healthy: heartbeat %.0f s old" % age)
    return 0


def cmd_device_enroll(args: argparse.Namespace) -> int:
    """Create broker credentials for a device and write its board config."""
    from broker_service.tools.enroll import enroll

    enroll(
        args.device_id,
        Path(args.passwd_file),
        args.broker_host,
        args.broker_port,
        args.use_case,
        args.fleet,
        args.password,
        out=Path(args.out) if args.out else None,
        replace=args.replace,
        tls=not args.no_tls,
        ca_file=args.ca_file,
        keys_file=Path(args.hmac_keys_file) if args.hmac_keys_file else None,
    )
    if not args.no_tls and not args.ca_file:
        print(
            "note: no --ca-file: a MicroPython board refuses TLS without the broker's CA "
            "(deploy/ca/ca.crt after deploy/make-certs.sh)"
        )
    if args.out:
        print(
            "wrote %s; bundle it with: tinymetafed device bundle --config %s --out DIR"
            % (args.out, args.out)
        )
    print("enrolled %s in %s" % (args.device_id, args.passwd_file))
    return 0


def cmd_device_revoke(args: argparse.Namespace) -> int:
    """Remove a device's broker credentials and ACL lines."""
    from broker_service.tools.enroll import revoke

    keys_file = Path(args.hmac_keys_file) if args.hmac_keys_file else None
    revoke(args.device_id, Path(args.passwd_file), keys_file=keys_file)
    print(
        "revoked %s in %s; restart the broker to close its connection "
        "(docker compose restart mosquitto)" % (args.device_id, args.passwd_file)
    )
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `tinymetafed bench: error: ...` (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, "%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))


def _command(sub, name: str, func, help_text: str, **kw) -> argparse.ArgumentParser:
    """A subcommand's parser; its function's docstring is the description."""
    p = sub.add_parser(name, help=help_text, description=func.__doc__, **kw)
    p.set_defaults(func=func, command_prog=p.prog)
    return p


def _common(p: argparse.ArgumentParser, default_use_case: str | None = None) -> None:
    p.add_argument(
        "--use-case",
        choices=sorted(USE_CASES),
        default=default_use_case,
        required=default_use_case is None,
    )
    p.add_argument("--data-dir", help="folder holding the data sets (or $%s)" % DATA_ENV)
    p.add_argument("--seed", type=int, default=0)


def _bench_parser(sub) -> None:
    p = _command(sub, "bench", cmd_bench, "compare all algorithms on one use case (or all)")
    p.add_argument("--use-case", choices=sorted(USE_CASES) + ["all"], required=True)
    p.add_argument("--data-dir", help="folder holding the data sets (or $%s)" % DATA_ENV)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", help="several seeds, e.g. 0,1,2 or 0-2 (overrides --seed)")
    p.add_argument("--rounds", type=int, help="meta-training rounds (default: the use case's)")
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--json", help="write the results JSON here (one use case)")
    p.add_argument("--json-dir", help="write bench-<use case>.json files here")
    p.add_argument("--algorithms", help="comma-separated subset, e.g. tinymetafed,tinyreptile")
    p.add_argument("--checkpoint-dir", help="save each algorithm's final model here")
    p.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    p.add_argument(
        "--tuned-dir",
        help="folder of tuned-<use case>.json (default benchmarks/results; 'none': defaults)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-round progress")
    p.add_argument(
        "--ablations",
        action="store_true",
        help="also run TinyMetaFed without error feedback and with stale residuals decayed/reset",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a protocol setting for every algorithm (e.g. --set rotations=true)",
    )


def _evaluate_parser(sub) -> None:
    p = _command(sub, "evaluate", cmd_evaluate, "measure a checkpoint on new devices")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--use-case", choices=sorted(USE_CASES))
    p.add_argument("--data-dir", help="folder holding the data sets (or $%s)" % DATA_ENV)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--devices", type=int, help="number of new devices (default: the bench's)")
    p.add_argument("--json", help="write the result JSON here")


def _demo_parser(sub) -> None:
    p = _command(sub, "demo", cmd_demo, "the whole system on this machine: broker, service, fleet")
    _common(p, default_use_case="sine")
    p.add_argument(
        "--rounds",
        type=int,
        help="rounds (default: sine %d, chosen on validation devices; other use cases %d)"
        % (DEMO_SESSION["rounds"], OTHER_ROUNDS),
    )
    p.add_argument("--devices", type=int, default=DEMO_DEVICES, help="simulated CPython agents")
    p.add_argument(
        "--cohort",
        type=int,
        help="devices a round (default: sine %d, other use cases their own)"
        % DEMO_SESSION["cohort"],
    )
    p.add_argument("--broker", help="a real broker URL instead of the embedded one")
    p.add_argument("--no-micropython", action="store_true", help="no micropython agent")
    p.add_argument("--out", default="tinymetafed-out", help="output folder")


def _export_parser(sub) -> None:
    p = _command(sub, "export", cmd_export, "write a checkpoint's model as ONNX")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="model.onnx")
    p.add_argument(
        "--with-head-from",
        metavar="SUPPORT_FILE",
        help="fit the local head on these support samples (sample-file format)",
    )


def _init_parser(sub) -> None:
    p = _command(sub, "init", cmd_init, "a model spec and initial weights from an ONNX graph")
    p.add_argument("--from-onnx", required=True, metavar="ARCH.onnx")
    p.add_argument("--out", default="init.ckpt.json")
    p.add_argument("--use-case", help="the use case this model is for (informational)")


def _health_parser(sub) -> None:
    p = _command(sub, "health", cmd_health, "exit 0 when a running service's heartbeat is recent")
    p.add_argument("--state-dir", default=SERVICE_DEFAULTS.state_dir)
    p.add_argument("--max-age", type=float, default=120.0, help="seconds")


def _report_parser(sub) -> None:
    p = _command(sub, "report", cmd_report, "an HTML report (plots) of a metrics file")
    p.add_argument("--metrics", required=True, help="line-protocol file written by the service")
    p.add_argument("--out", default="report.html")
    p.add_argument("--bench", help="a bench JSON: its curves as baselines and its comparison table")


def _status_parser(sub) -> None:
    p = _command(sub, "status", cmd_status, "the fleet live from the broker's retained topics")
    p.add_argument("--broker", default=SERVICE_DEFAULTS.broker, help="mqtt:// or mqtts:// URL")
    p.add_argument("--fleet", default=SERVICE_DEFAULTS.fleet)
    p.add_argument("--prefix", default=SERVICE_DEFAULTS.prefix)
    p.add_argument("--username", help="broker user name (password: $%s)" % env_name("password"))
    p.add_argument("--ca-file", help="CA certificate (PEM) to verify an mqtts:// broker")
    p.add_argument("--json", action="store_true", help="print one JSON snapshot and exit")
    p.add_argument("--once", action="store_true", help="print the view once and exit")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--plain", action="store_true", help="plain text even when rich is installed")


def _option_help(opt: FlagOption) -> str:
    text = opt.help
    if opt.default is not None and opt.kind is not bool and "default" not in text:
        text += " (default: %s)" % opt.default
    return text.replace("%", "%%")


def _serve_parser(sub) -> None:
    secrets = secret_options()
    p = _command(
        sub,
        "serve",
        cmd_serve,
        "run the aggregation service against a broker",
        epilog="Every option can also come from the --config file or $%s<OPTION> (upper case); "
        "flags win. The secrets (%s) come only from the file or the environment (%s), never "
        "from a flag."
        % (
            ENV_PREFIX,
            ", ".join(secrets),
            ", ".join("$" + env_name(name) for name in secrets),
        ),
    )
    p.add_argument("--config", help="TOML file (see docs/service.md)")
    for opt in flag_options():
        if opt.kind is bool:  # a switch; unset (None) lets the file or the environment decide
            p.add_argument(opt.flag, action="store_true", default=None, help=_option_help(opt))
        else:
            p.add_argument(opt.flag, type=opt.kind, help=_option_help(opt))
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a training setting (e.g. --set top_p=5), repeatable",
    )


def _client_args(p: argparse.ArgumentParser) -> None:
    """What an agent or a simulated fleet needs to reach the service's broker."""
    _common(p, default_use_case="sine")
    p.add_argument("--broker", default=SERVICE_DEFAULTS.broker, help="mqtt:// or mqtts:// URL")
    p.add_argument("--username", help="broker user name (password: $%s)" % env_name("password"))
    p.add_argument("--fleet", default=SERVICE_DEFAULTS.fleet)
    p.add_argument("--prefix", default=SERVICE_DEFAULTS.prefix)


def _agent_parser(sub) -> None:
    p = _command(sub, "agent", cmd_agent, "run one CPython device agent")
    _client_args(p)
    p.add_argument("--device-id", required=True)
    p.add_argument("--samples", help="a sample file (device_agent.datasource format)")
    p.add_argument("--max-rounds", type=int, help="leave after this many rounds")


def _fleet_parser(sub) -> None:
    p = _command(sub, "fleet", cmd_fleet, "run N simulated agents against a broker")
    _client_args(p)
    p.add_argument("--devices", type=int, default=10)


def _device_bundle_parser(sub) -> None:
    p = _command(sub, "bundle", cmd_device_bundle, "write the files that go onto a board")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="the board's config JSON (default: the ESP32 example)")
    p.add_argument("--mpy", action="store_true", help="cross-compile to .mpy with mpy-cross")
    p.add_argument("--arch", help="board architecture for --mpy: %s" % ", ".join(bundle.ARCHES))
    p.add_argument(
        "--plain",
        action="store_true",
        help="strip @micropython.native (ports without the native emitter)",
    )


HMAC_KEYS_HELP = (
    "the service's hmac_keys_file: give the device a new HMAC key there and in its config "
    "(revoke removes it); the service reads the file at start"
)


def _device_enroll_parser(sub) -> None:
    p = _command(
        sub, "enroll", cmd_device_enroll, "create a device's broker credentials and config"
    )
    p.add_argument("--device-id", required=True)
    p.add_argument("--passwd-file", default="deploy/mosquitto/passwd")
    p.add_argument("--password", help="default: a new random one (printed in the config only)")
    p.add_argument("--broker-host", default="192.0.2.10", help="as the board reaches it")
    p.add_argument("--broker-port", type=int, default=8883)
    p.add_argument("--no-tls", action="store_true", help="plain MQTT (a lab broker only)")
    p.add_argument("--ca-file", help="the broker's CA certificate (copied onto the board)")
    p.add_argument("--use-case", default=SERVICE_DEFAULTS.use_case)
    p.add_argument("--fleet", default=SERVICE_DEFAULTS.fleet)
    p.add_argument("--out", help="write the board config JSON here (owner-only)")
    p.add_argument("--replace", action="store_true", help="reset an enrolled device")
    p.add_argument("--hmac-keys-file", help=HMAC_KEYS_HELP)


def _device_revoke_parser(sub) -> None:
    p = _command(sub, "revoke", cmd_device_revoke, "remove a device's broker credentials and ACL")
    p.add_argument("--device-id", required=True)
    p.add_argument("--passwd-file", default="deploy/mosquitto/passwd")
    p.add_argument("--hmac-keys-file", help=HMAC_KEYS_HELP)


def _device_parser(sub) -> None:
    device = sub.add_parser(
        "device", help="work with device boards", description="Board files and credentials."
    )
    inner = device.add_subparsers(dest="device_command", required=True)
    _device_bundle_parser(inner)
    _device_enroll_parser(inner)
    _device_revoke_parser(inner)


SUBCOMMANDS = (
    _bench_parser,
    _evaluate_parser,
    _demo_parser,
    _export_parser,
    _init_parser,
    _health_parser,
    _report_parser,
    _status_parser,
    _serve_parser,
    _agent_parser,
    _fleet_parser,
    _device_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = Parser(prog="tinymetafed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


# What a user can get wrong: settings, data, files, models, credentials, the broker's address.
USER_ERRORS = (
    ConfigError,
    DataMissingError,
    checkpoint.CheckpointError,
    bundle.BundleError,
    OnnxError,
    EnrollError,
    AgentConfigError,
    OSError,
)


def error_message(exc: BaseException) -> str:
    """One line saying what went wrong: `path: reason` for a file, else the exception's text."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = "%s: %s" % (exc.filename, exc.strerror)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tinymetafed` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print("%s: error: %s" % (args.command_prog, error_message(exc)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
