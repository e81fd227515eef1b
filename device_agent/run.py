"""Run the agent from a config file (board, unix-port MicroPython, or CPython).

    micropython -m device_agent.run CONFIG.json [MAX_ROUNDS]
    python -m device_agent.run CONFIG.json [MAX_ROUNDS]

With MAX_ROUNDS the agent leaves (retained offline status) after that many rounds; without it,
it serves forever, reconnecting after any loss (device_agent.robust).

On MicroPython the heap is collected every COMPILE_GC_BYTES allocated while the agent's modules
load and the agent is built: compiling from source leaves garbage between the bytecode kept, and
collected only when the heap is full it would split the heap into holes too small for the
model's parameter-sized arrays (omniglot's failed so in 256 KB). The default (collect when
full) is restored once the agent is built.
"""

import gc
import sys

COMPILE_GC_BYTES = 8192
"""Collect after this many bytes allocated while the agent loads (MicroPython)."""

if hasattr(gc, "threshold"):  # MicroPython
    gc.threshold(COMPILE_GC_BYTES)

from device_agent.agent import Agent  # noqa: E402 - after the threshold is set
from device_agent.config import load_config  # noqa: E402
from device_agent.datasource import make_source  # noqa: E402
from device_agent.robust import RobustAgent  # noqa: E402


def build(cfg):
    """An Agent for a checked config dict (then the heap is collected only when full again).

    The source is made from the agent's own plan: a second Plan of the same spec would stay
    alive in the source (1.8 KB of heap for kws on a Cortex-M firmware)."""
    agent = Agent(cfg, None)
    agent.source = make_source(cfg, agent.plan)
    if hasattr(gc, "threshold"):
        gc.threshold(-1)
    return agent


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
