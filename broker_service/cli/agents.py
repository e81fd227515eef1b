"""`tinymetafed agent` and `tinymetafed fleet`: device agents on CPython against a broker, one
(on a sample file or a use case's device) or a simulated fleet of many.

Both reach the service's broker the same way, so they share their broker, fleet and use-case
flags; the agent code and the simulator are imported only when one of them runs.
"""

from __future__ import annotations

import argparse
import os

from broker_service.core.nn import NumpyNet
from broker_service.server.config import ServiceConfig, env_name
from broker_service.usecases.base import DataMissingError
from broker_service.usecases.registry import load_use_case

from .common import SERVICE_DEFAULTS, Subcommands, add_command, add_use_case_args, data_dir


def _client_args(p: argparse.ArgumentParser) -> None:
    """What an agent or a simulated fleet needs to reach the service's broker."""
    add_use_case_args(p, default_use_case="sine")
    p.add_argument("--broker", default=SERVICE_DEFAULTS.broker, help="mqtt:// or mqtts:// URL")
    p.add_argument("--username", help="broker user name (password: $%s)" % env_name("password"))
    p.add_argument("--fleet", default=SERVICE_DEFAULTS.fleet)
    p.add_argument("--prefix", default=SERVICE_DEFAULTS.prefix)


def add_agent(sub: Subcommands) -> None:
    """The parser of `tinymetafed agent`."""
    p = add_command(sub, "agent", cmd_agent, "run one CPython device agent")
    _client_args(p)
    p.add_argument("--device-id", required=True)
    p.add_argument("--samples", help="a sample file (device_agent.datasource format)")
    p.add_argument("--max-rounds", type=int, help="leave after this many rounds")


def cmd_agent(args: argparse.Namespace) -> int:
    """One CPython agent: trains on a sample file, or on the use case's data for its id."""
    from broker_service.sim.fleet import NumpyRunner
    from device_agent.agent import Agent
    from device_agent.config import make_config
    from device_agent.datasource import FileSource
    from device_agent.model import Plan
    from device_agent.robust import RobustAgent

    use_case = load_use_case(args.use_case, data_dir(args), seed=args.seed)
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


def _agent_config(args: argparse.Namespace, device_id: str, spec: dict) -> dict:
    """The agent's config document (device_agent.config), the password from the environment."""
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


def add_fleet(sub: Subcommands) -> None:
    """The parser of `tinymetafed fleet`."""
    p = add_command(sub, "fleet", cmd_fleet, "run N simulated agents against a broker")
    _client_args(p)
    p.add_argument("--devices", type=int, default=10)


def cmd_fleet(args: argparse.Namespace) -> int:
    """N simulated agents in one process against a broker, until Ctrl-C."""
    import time

    from broker_service.sim.fleet import SimulatedFleet

    host, port, _ = ServiceConfig(broker=args.broker).broker_address()
    use_case = load_use_case(args.use_case, data_dir(args), seed=args.seed)
    fleet = SimulatedFleet(
        host, port, use_case, args.devices, args.seed, args.fleet, args.prefix
    ).start()
    print("%d agents running against %s; Ctrl-C stops them" % (len(fleet.agents), args.broker))
    try:
        while True:
            time.sleep(1)
    finally:
        fleet.stop()
