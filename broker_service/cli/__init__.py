"""The `tinymetafed` command line, one module per command group.

Each module builds its commands' parsers beside their handlers: demo (demo), serve (serve,
health), agents (agent, fleet), bench (bench, evaluate), report (report, status), models
(export, init) and device (device bundle, enroll, revoke); common holds what they share. This
module puts the parsers together in the order `tinymetafed --help` lists them and runs the
chosen command, a user error becoming one line on stderr with exit code 2. A command's heavy
imports (the broker, ONNX, the demo) stay inside its handler, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .agents import add_agent, add_fleet, cmd_agent, cmd_fleet
from .bench import add_bench, add_evaluate, cmd_bench, cmd_evaluate
from .common import DATA_ENV, USER_ERRORS, Parser, Subcommands, error_message
from .demo import add_demo, cmd_demo
from .device import add_device, cmd_device_bundle, cmd_device_enroll, cmd_device_revoke
from .models import add_export, add_init, cmd_export, cmd_init
from .report import add_report, add_status, cmd_report, cmd_status
from .serve import add_health, add_serve, cmd_health, cmd_serve

__all__ = [
    "DATA_ENV",
    "DESCRIPTION",
    "SUBCOMMANDS",
    "USER_ERRORS",
    "Parser",
    "build_parser",
    "cmd_agent",
    "cmd_bench",
    "cmd_demo",
    "cmd_device_bundle",
    "cmd_device_enroll",
    "cmd_device_revoke",
    "cmd_evaluate",
    "cmd_export",
    "cmd_fleet",
    "cmd_health",
    "cmd_init",
    "cmd_report",
    "cmd_serve",
    "cmd_status",
    "error_message",
    "main",
]

# `tinymetafed --help`'s description.
DESCRIPTION = """The `tinymetafed` command line: every way to run and use TinyMetaFed from a shell.

Run the whole system on this machine (demo), the aggregation service (serve) and its health check
(health), device agents on CPython (agent, fleet), board files and credentials (device bundle,
device enroll), the benchmark of every algorithm (bench), a saved model on new devices
(evaluate), the HTML report of a session (report), the fleet live from the broker (status), and
ONNX out and in (export, init). A user error (a bad flag, a missing file, a setting that cannot
work) is one line on stderr, `tinymetafed <command>: error: ...`, with exit code 2.
"""

# The commands in the order --help lists them; `device` adds its own three.
SUBCOMMANDS: tuple[Callable[[Subcommands], None], ...] = (
    add_bench,
    add_evaluate,
    add_demo,
    add_export,
    add_init,
    add_health,
    add_report,
    add_status,
    add_serve,
    add_agent,
    add_fleet,
    add_device,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = Parser(prog="tinymetafed", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


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
