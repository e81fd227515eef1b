"""Run the agent from a config file (board, unix-port MicroPython, or CPython).

    micropython -m device_agent.run CONFIG.json [MAX_ROUNDS]
    python -m device_agent.run CONFIG.json [MAX_ROUNDS]

With MAX_ROUNDS the agent leaves (retained offline status) after that many rounds; without it,
it serves forever, reconnecting after any loss (device_agent.robust).
"""

import sys

from device_agent.agent import Agent
from device_agent.config import load_config
from device_agent.datasource import FileSource, SyntheticSource
from device_agent.model import Plan
from device_agent.robust import RobustAgent
from device_agent.specs import spec_for


def make_source(cfg, plan):
    """The data source the config asks for: a sample file, or synthetic samples."""
    data = cfg["data"] or {}
    if data.get("kind") == "file":
        return FileSource(data["path"], plan.layers[0].size_in(), plan.loss == "softmax_ce")
    return SyntheticSource(plan, int(data.get("seed", 1)))


def build(cfg):
    """An Agent for a checked config dict."""
    plan = Plan(cfg["spec"] or spec_for(cfg["use_case"]))
    return Agent(cfg, make_source(cfg, plan))


def main(argv):
    """Entry point: config path and optional round limit."""
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print("usage: device_agent.run CONFIG.json [MAX_ROUNDS]")
        return 2
    cfg = load_config(argv[1])
    max_rounds = int(argv[2]) if len(argv) > 2 else cfg["max_rounds"]
    run_config(cfg, max_rounds)
    return 0


def run_config(cfg, max_rounds=None):
    """Run the agent of a checked config until max_rounds rounds (None: forever), reconnecting."""
    RobustAgent(build(cfg)).run(max_rounds)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
