"""What every `tinymetafed` command shares: its parser, its data folder, JSON in and out, and
the user errors it reports.

The command modules of this package build their parsers and run their handlers with these
pieces, so that every command finds the data sets in the same place, reads and writes JSON the
same way, and fails the same way: a user error (a bad flag, a missing file, a setting that
cannot work) is one line on stderr, `tinymetafed <command>: error: ...`, with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

from broker_service.core.settings import parse_setting_value
from broker_service.server import checkpoint
from broker_service.server.config import ConfigError, ServiceConfig
from broker_service.tools import bundle
from broker_service.tools.enroll import EnrollError
from broker_service.tools.onnx_io import OnnxError
from broker_service.usecases.base import DataMissingError
from broker_service.usecases.registry import USE_CASES
from device_agent.config import AgentConfigError

DATA_ENV = "TINYMETAFED_DATA"

SERVICE_DEFAULTS = ServiceConfig()

# A command's handler: its parsed arguments in, the process's exit code out.
Handler: TypeAlias = Callable[[argparse.Namespace], int]

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


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `tinymetafed bench: error: ...` (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, "%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))


# What `add_subparsers` returns: where a command group adds its commands' parsers.
Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"


def add_command(
    sub: Subcommands, name: str, func: Handler, help_text: str, **kw: Any
) -> argparse.ArgumentParser:
    """A subcommand's parser; its function's docstring is the description."""
    p = sub.add_parser(name, help=help_text, description=func.__doc__, **kw)
    p.set_defaults(func=func, command_prog=p.prog)
    return p


def add_use_case_args(p: argparse.ArgumentParser, default_use_case: str | None = None) -> None:
    """--use-case (required when there is no default), --data-dir and --seed."""
    p.add_argument(
        "--use-case",
        choices=sorted(USE_CASES),
        default=default_use_case,
        required=default_use_case is None,
    )
    p.add_argument("--data-dir", help="folder holding the data sets (or $%s)" % DATA_ENV)
    p.add_argument("--seed", type=int, default=0)


def data_dir(args: argparse.Namespace) -> str | None:
    """The folder holding the data sets: --data-dir, else $TINYMETAFED_DATA, else none."""
    return args.data_dir or os.environ.get(DATA_ENV)


def write_json(path: str | None, doc: dict) -> None:
    """Write `doc` as JSON to `path` (its folder made) and say so; nothing without a path."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(doc, indent=1) + "\n")
        print("wrote %s" % path)


def read_json(path: str, what: str) -> Any:
    """A JSON file's document; a ConfigError naming the file when it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as exc:
        raise ConfigError("%s %s is not valid JSON: %s" % (what, path, exc)) from None


def parse_setting(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read by the setting's type (core.settings.parse_setting_value);
    a key that is no setting is read as JSON when it parses, else as text, for the caller to
    name."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError("--set takes KEY=VALUE, got %r" % text)
    try:
        return key, parse_setting_value(key, value)
    except ValueError as exc:
        raise ConfigError("--set: %s" % exc) from None
