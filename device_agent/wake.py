"""One wake of a device that deep-sleeps between wakes (asynchronous sessions).

    micropython -m device_agent.wake CONFIG.json sensor|train|auto
    python -m device_agent.wake CONFIG.json sensor|train|auto

runs ONE wake and ends: on a board with `machine.deepsleep` it then sleeps until the next wake
(the RTC timer restarts the board, main.py runs again); on the unix port and CPython the process
just ends, which is what a deep sleep is to the program. The config needs a "sleep" block
(device_agent.config). docs/protocol.md ("Asynchronous sessions") is the protocol, docs/device.md
("Sleeping between wakes") the device's side.

- a sensor wake reads one sample from the configured data source into the sensor ring
  (device_agent.ring) and ends, without the radio;
- a training wake connects, subscribes to its command topic, publishes its birth, and waits up
  to `order_ms` for its retained work order, which it verifies as the agent verifies any command
  (device_agent.agent.Agent: signature, not older than the newest verified). Then, as the
  protocol's steps 1-4 say: it drops its unacknowledged update once `receipt` reaches its
  version; re-sends that update (the same bytes) while it is unacknowledged, without training;
  otherwise, when `want`, a version newer than the last it trained on and enough samples in the
  ring, it fetches the model only if it does not hold it, trains once on the ring's samples,
  writes its state to flash once (device_agent.state: held model, residual, rollback floor, the
  update as unacknowledged) and publishes the update (QoS 1). It waits up to `receipt_ms` for the
  receipt, sends its telemetry (QoS 0), publishes its retained status {"state": "asleep",
  "wake_s": ...} and disconnects. A training wake that did not train writes its state at its
  end: one state write per training wake, whatever happened;
- auto (a board's main.py): a sensor wake, and a training wake too every
  train_every_s / sense_every_s sensor wakes.

A wake's exit status is 0, or 1 when its broker could not be reached or the session broke (its
state is written all the same). Log lines are the agent's: `agent <event> key=value ...`.
"""

import gc
import sys

COMPILE_GC_BYTES = 8192
"""Collect after this many bytes allocated while the modules load (MicroPython; see run.py)."""

if hasattr(gc, "threshold"):  # MicroPython
    gc.threshold(COMPILE_GC_BYTES)

from device_agent.config import AgentConfigError, load_config  # noqa: E402 - after the threshold
from device_agent.datasource import FileSource, SyntheticSource, make_source  # noqa: E402
from device_agent.model import Plan  # noqa: E402
from device_agent.ring import Ring  # noqa: E402
from device_agent.specs import spec_for  # noqa: E402


def _plan(cfg):
    return Plan(cfg["spec"] or spec_for(cfg["use_case"]))


def sample_at(cfg, plan, n):
    """Sample number n of the configured source, as a sensor wake reads it: line n of the file
    (wrapping round at its end, as the always-on agent's loop does; the file read at most once
    more than n lines, whatever n), or the synthetic source seeded n further on."""
    source = make_source(cfg, plan)
    if isinstance(source, SyntheticSource):
        return next(SyntheticSource(plan, int(cfg["data"].get("seed", 1)) + n))
    if isinstance(source, FileSource):
        seen = 0
        while n > 0:
            if source._next_line() is None:  # the end: what is left of n, modulo the lines
                if seen == 0:
                    break
                n %= seen
                seen = 0
                continue
            seen += 1
            n -= 1
    return next(source)


def sensor_wake(cfg, plan=None):
    """Append one sample to the ring (no network); returns the Ring."""
    plan = plan or _plan(cfg)
    sleep = cfg["sleep"]
    ring = Ring(sleep["ring_file"], plan, sleep["ring"])
    if ring.reset is not None:
        print("agent ring_reset reason=%s" % ring.reset)
    x = y = None
    try:
        x, y = sample_at(cfg, plan, ring.wakes)
    except Exception as exc:  # noqa: BLE001 - a failed reading is logged; the wake is counted
        print("agent sensor_error error=%r" % (exc,))
    ring.append(x, y)
    print("agent sensed samples=%d wakes=%d" % (ring.appended, ring.wakes))
    return ring


def training_wake(cfg, **options):
    """One training wake (device_agent.sleepy, loaded only here); returns its exit status."""
    from device_agent.sleepy import WakeAgent

    agent = WakeAgent(cfg, **options)
    if hasattr(gc, "threshold"):
        gc.threshold(-1)  # built: the heap is collected only when full again (as run.build)
    return agent.run_wake()


def deep_sleep(ms):
    """Sleep `ms` milliseconds in deep sleep where the board has it (the board restarts at
    its end); elsewhere return at once: the process ends, the next wake is a new process."""
    try:
        machine = __import__("machine")  # a board's (a port's stubs need not type it)
    except ImportError:
        return
    if hasattr(machine, "deepsleep"):
        machine.deepsleep(ms)


def auto_wake(cfg, join=None):
    """A board's wake: a sensor wake, then every train_every_s / sense_every_s of them a
    training wake (after `join()`, which joins the network); returns the exit status."""
    sleep = cfg["sleep"]
    plan = _plan(cfg)
    ring = sensor_wake(cfg, plan)
    every = max(1, sleep["train_every_s"] // sleep["sense_every_s"])
    status = 0
    if ring.wakes % every == 0:
        ring = plan = None
        gc.collect()
        if join is not None:
            join()
        status = training_wake(cfg)
    return status


def main(argv):
    """Entry point: config path and the wake's kind."""
    if len(argv) < 3 or argv[2] not in ("sensor", "train", "auto"):
        print("usage: device_agent.wake CONFIG.json sensor|train|auto")
        return 2
    cfg = load_config(argv[1])
    if cfg.get("sleep") is None:
        raise AgentConfigError('a sleeping device needs a "sleep" block in its config')
    kind = argv[2]
    if kind == "sensor":
        sensor_wake(cfg)
        status = 0
    elif kind == "train":
        status = training_wake(cfg)
    else:
        status = auto_wake(cfg)
    deep_sleep(1000 * cfg["sleep"]["sense_every_s"])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
