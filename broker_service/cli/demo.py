"""`tinymetafed demo`: the whole system on this machine, the README's first command.

An embedded broker (or --broker), the aggregation service, a simulated fleet of CPython agents
and, when the MicroPython unix port is installed, one real MicroPython agent, for a short
run whose defaults were chosen on validation devices. The demo, and with it the broker and
the service, is imported only when the command runs, so `tinymetafed --help` stays fast.
"""

from __future__ import annotations

import argparse

from broker_service.sim.demo_session import DEMO_DEVICES, DEMO_SESSION, OTHER_ROUNDS

from .common import Subcommands, add_command, add_use_case_args, data_dir


def add_demo(sub: Subcommands) -> None:
    """The parser of `tinymetafed demo`."""
    p = add_command(
        sub, "demo", cmd_demo, "the whole system on this machine: broker, service, fleet"
    )
    add_use_case_args(p, default_use_case="sine")
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


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main command: broker, service and fleet on this machine."""
    from broker_service.sim.demo import run_demo

    summary = run_demo(
        args.use_case,
        args.devices,
        args.rounds,
        args.broker,
        args.out,
        data_dir(args),
        args.seed,
        not args.no_micropython,
        args.cohort,
    )
    return 0 if summary["rounds"] else 1
