"""`tinymetafed serve` and `tinymetafed health`: the aggregation service, and the check that a
running one is alive.

serve's flags are made from the service's configuration fields (broker_service.server.config),
so a new option of the service is a new flag without a change here; the secrets never become
flags. health lives beside serve because it reads the heartbeat that serve's state folder holds.
The service itself (and with it the broker client) is imported only when serve runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from broker_service.server.config import (
    ENV_PREFIX,
    ConfigError,
    FlagOption,
    env_name,
    flag_options,
    load_config,
    secret_options,
)

from .common import SERVICE_DEFAULTS, USER_ERRORS, Subcommands, add_command, parse_setting


def add_serve(sub: Subcommands) -> None:
    """The parser of `tinymetafed serve`: one flag a configuration field, secrets left out."""
    p = add_command(
        sub,
        "serve",
        cmd_serve,
        "run the aggregation service against a broker",
        epilog=_serve_epilog(),
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


def _serve_epilog() -> str:
    """Where else an option can come from, and where the secrets must come from."""
    secrets = secret_options()
    return (
        "Every option can also come from the --config file or $%s<OPTION> (upper case); "
        "flags win. The secrets (%s) come only from the file or the environment (%s), never "
        "from a flag."
        % (
            ENV_PREFIX,
            ", ".join(secrets),
            ", ".join("$" + env_name(name) for name in secrets),
        )
    )


def _option_help(opt: FlagOption) -> str:
    """A configuration field's help, with its default when it has one worth saying."""
    text = opt.help
    if opt.default is not None and opt.kind is not bool and "default" not in text:
        text += " (default: %s)" % opt.default
    return text.replace("%", "%%")


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the aggregation service against a broker until its rounds (with --mode async: its
    aggregation steps) are done (with --standby: first wait until the service holding the same
    state is gone, then take over)."""
    from broker_service.observe.logs import EventLog
    from broker_service.server.buffered import service_for
    from broker_service.server.standby import Standby

    flags: dict = {o.name: getattr(args, o.name) for o in flag_options()}
    flags["settings"] = dict(parse_setting(s) for s in args.set or [])
    cfg = load_config(args.config, flags)
    log = EventLog()
    lock = Standby(cfg, log).wait() if cfg.standby else None
    try:
        service = service_for(cfg, log, lock=lock)
    except USER_ERRORS:
        raise  # says what is wrong already (a state folder in use, a bad checkpoint)
    except ValueError as exc:  # a training setting that cannot work (strategies, bounds)
        raise ConfigError("training settings: %s" % exc) from None
    summary = service.run()
    print(json.dumps(summary, indent=1))
    return 0


def add_health(sub: Subcommands) -> None:
    """The parser of `tinymetafed health`."""
    p = add_command(
        sub, "health", cmd_health, "exit 0 when a running service's heartbeat is recent"
    )
    p.add_argument("--state-dir", default=SERVICE_DEFAULTS.state_dir)
    p.add_argument("--max-age", type=float, default=120.0, help="seconds")


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
