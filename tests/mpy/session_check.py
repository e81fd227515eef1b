# The agent's sessions and its reconnect policy against a scripted fake transport, no broker.
# Usage: micropython tests/mpy/session_check.py  (from the repository root); prints one summary
# line a fact, identical under MicroPython and CPython. tests/test_agent_parts.py imports the
# scenarios to check them in detail on CPython.
import gc
import sys
from array import array

sys.path.insert(0, ".")
from device_agent import codec  # noqa: E402
from device_agent.agent import Agent  # noqa: E402
from device_agent.config import make_config  # noqa: E402
from device_agent.datasource import SyntheticSource  # noqa: E402
from device_agent.robust import RobustAgent  # noqa: E402
from device_agent.topics import Topics  # noqa: E402
from tests.mpy.fake_transport import FakeBroker  # noqa: E402

DEVICE = "fake-1"
TOPICS = Topics("tinymetafed", "test")
VERSION = 2
COMMAND = {
    "round": 0,
    "version": VERSION,
    "recon_samples": 2,
    "adapt_samples": 3,
    "top_p": 50.0,
    "values": "f32",
    "seed": 1,
}


def make_agent(broker, events):
    """A sine agent on the fake broker; its log events are appended to `events`."""
    cfg = make_config({"device_id": DEVICE, "fleet": "test", "use_case": "sine"})
    agent = Agent(cfg, None, transport_factory=broker.factory, logger=events_logger(events))
    # the source needs the plan the agent built
    agent.source = SyntheticSource(agent.plan, 1)
    return agent


def events_logger(events):
    def logger(event, **fields):
        events.append((event, fields))

    return logger


def model_message(n, version=VERSION):
    """The fleet's retained model: n small values."""
    values = array("f", bytes(4 * n))
    for i in range(n):
        values[i] = 0.05 * ((i % 7) - 3)
    payload = codec.encode(codec.KIND_MODEL, n, None, values, version, version)
    return TOPICS.model, bytes(payload)


def command_message(cmd=None):
    """A round command to DEVICE."""
    cmd = cmd or COMMAND
    payload = codec.encode_command(cmd, cmd["version"], cmd["round"])
    return TOPICS.command(DEVICE), bytes(payload)


def run(sessions_of_agent, max_rounds=1):
    """Build the agent, script the sessions (a function of the agent), run the wrapper.

    Returns (agent, broker, sleeps, events).
    """
    events = []
    broker = FakeBroker([])
    agent = make_agent(broker, events)
    broker.sessions = sessions_of_agent(agent)
    sleeps = []
    RobustAgent(agent, sleep=sleeps.append).run(max_rounds)
    return agent, broker, sleeps, events


def reconnect_sessions(agent):
    """Refused twice; then the model arrives and the connection is lost; then the command."""
    model = model_message(agent.plan.n_global)
    return [
        {"refuse": True},
        {"refuse": True},
        {"inbox": [model], "lose": True},
        {"inbox": [command_message()]},
    ]


def lost_round_sessions(agent):
    """Model and command arrive, the connection is lost inside the round; the command again."""
    model = model_message(agent.plan.n_global)
    return [{"inbox": [model, command_message()], "lose": True}, {"inbox": [command_message()]}]


def summary(name, agent, broker, sleeps, events):
    """Lines that must be the same on every runtime."""
    lines = [
        "%s sleeps %s" % (name, sleeps),
        "%s connects %d rounds %d" % (name, agent.connects, agent.rounds_done),
        "%s events %s" % (name, " ".join(e for e, _ in events)),
        "%s published %s" % (name, " ".join(t.split("/")[-1] for t in broker.topics_published())),
        "%s closed %s" % (name, [t.closed for t in broker.transports]),
    ]
    for topic, payload, _, _ in broker.published:
        if topic == TOPICS.update(DEVICE):
            h, idx, values = codec.decode(payload)
            lines.append("%s update %d %d %d %d" % (name, h.round, h.model_version, h.n, h.k))
            lines.append("%s delta sum %.3g" % (name, sum(values)))
    return lines


if __name__ == "__main__":
    for name, sessions in (("reconnect", reconnect_sessions), ("lost", lost_round_sessions)):
        for line in summary(name, *run(sessions)):
            print(line)
        gc.collect()
