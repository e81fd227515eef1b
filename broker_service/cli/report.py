"""`tinymetafed report` and `tinymetafed status`: a training run seen afterwards (the HTML
report of its metrics file) and while it runs (the fleet live from the broker's retained topics).

They are the two read-only views of a run, one over its recorded metrics and one over the
broker; each imports its renderer (plots, the broker client, rich) only when it runs.
"""

from __future__ import annotations

import argparse
import os

from broker_service.server.config import env_name

from .common import SERVICE_DEFAULTS, Subcommands, add_command


def add_report(sub: Subcommands) -> None:
    """The parser of `tinymetafed report`."""
    p = add_command(sub, "report", cmd_report, "an HTML report (plots) of a metrics file")
    p.add_argument("--metrics", required=True, help="line-protocol file written by the service")
    p.add_argument("--out", default="report.html")
    p.add_argument("--bench", help="a bench JSON: its curves as baselines and its comparison table")


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report of a metrics file and print the short summary."""
    from broker_service.observe.report import write_report

    for text in write_report(args.metrics, args.out, args.bench):
        print(text)
    print("wrote %s" % args.out)
    return 0


def add_status(sub: Subcommands) -> None:
    """The parser of `tinymetafed status`."""
    p = add_command(sub, "status", cmd_status, "the fleet live from the broker's retained topics")
    p.add_argument("--broker", default=SERVICE_DEFAULTS.broker, help="mqtt:// or mqtts:// URL")
    p.add_argument("--fleet", default=SERVICE_DEFAULTS.fleet)
    p.add_argument("--prefix", default=SERVICE_DEFAULTS.prefix)
    p.add_argument("--username", help="broker user name (password: $%s)" % env_name("password"))
    p.add_argument("--ca-file", help="CA certificate (PEM) to verify an mqtts:// broker")
    p.add_argument("--json", action="store_true", help="print one JSON snapshot and exit")
    p.add_argument("--once", action="store_true", help="print the view once and exit")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--plain", action="store_true", help="plain text even when rich is installed")


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
