# The agent's device round through its own session path (device_agent.agent.Agent, the tests'
# fake transport, SyntheticSource samples) for a few small models; the same on CPython, the unix
# port and a Cortex-M firmware under QEMU (tests/test_cortexm.py). Inputs, targets and θ_g are
# exact in float32, so the runtimes differ only in how they round arithmetic.
# Prints one line a fact:
#   kernels native|pure              whether the agent's Network runs the tmf_kernels module
#   update <model> <payload hex>     the DELTA the agent published (float32 values)
#   loss <model> <before> <after> <mean adaptation loss>   from its telemetry
#   heap <model> <free>              gc.mem_free() after the round (MicroPython)
# Usage: micropython tests/mpy/cortexm_round.py (from the repository root); on a firmware with
# the files in its ROMFS image: `from tests.mpy.cortexm_round import main; main()`.
import gc
import json
import sys
from array import array

sys.path.insert(0, ".")
from device_agent import codec  # noqa: E402
from device_agent.agent import Agent  # noqa: E402
from device_agent.config import make_config  # noqa: E402
from device_agent.datasource import SyntheticSource  # noqa: E402
from device_agent.specs import spec_for  # noqa: E402
from device_agent.topics import Topics  # noqa: E402
from tests.mpy.fake_transport import FakeBroker  # noqa: E402

DEVICE = "cm-1"
TOPICS = Topics("tinymetafed", "default")

CNN = {
    "input": [1, 8, 8],
    "loss": "softmax_ce",
    "local_layers": 1,
    "layers": [
        {"type": "conv2d", "filters": 3, "kernel": 3, "stride": 1},
        {"type": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 6},
        {"type": "tanh"},
        {"type": "dense", "units": 3},
    ],
}
"""A small CNN: convolution, pooling, tanh and softmax in one round."""

MODELS = (
    ("sine", spec_for("sine"), {"recon_samples": 10, "adapt_samples": 20}),
    ("occupancy", spec_for("occupancy"), {"recon_samples": 20, "recon_lr": 0.1, "adapt_lr": 0.05}),
    ("cnn", CNN, {"recon_samples": 6, "adapt_samples": 8, "recon_lr": 0.1, "adapt_lr": 0.05}),
)
"""(name, spec, command settings) of each round: the sine and occupancy defaults, and the CNN."""


def theta(n):
    """θ_g of n entries, multiples of 1/64 in [-0.375, 0.375]: exact in float32."""
    values = array("f", bytes(4 * n))
    for i in range(n):
        values[i] = ((i * 5) % 13 - 6) / 16.0
    return values


def sessions(agent, settings):
    """One scripted session: the fleet's model, then the round command (f32 values, Top-20 %)."""
    n = agent.plan.n_global
    model = codec.encode(codec.KIND_MODEL, n, None, theta(n), 1, 1)
    command = {"round": 1, "version": 1, "seed": 3, "top_p": 20.0, "values": "f32"}
    command.update(settings)
    cmd = codec.encode_command(command, 1, 1)
    inbox = [(TOPICS.model, bytes(model)), (TOPICS.command(DEVICE), bytes(cmd))]
    return [{"inbox": inbox}]


def run_model(name, spec, settings):
    """Run one round of `spec` through the agent; returns its printed lines."""
    cfg = make_config({"device_id": DEVICE, "use_case": "sine", "spec": spec})
    broker = FakeBroker([])
    agent = Agent(cfg, None, transport_factory=broker.factory, logger=lambda event, **f: None)
    agent.source = SyntheticSource(agent.plan, 7)
    broker.sessions = sessions(agent, settings)
    agent.connect()
    agent.serve(1)
    lines = []
    for topic, payload, _, _ in broker.published:
        if topic == TOPICS.update(DEVICE):
            lines.append("update %s %s" % (name, bytes(payload).hex()))
        elif topic == TOPICS.telemetry(DEVICE):
            doc = json.loads(payload)
            loss = (doc["loss_before"], doc["loss_after"], doc["adapt_loss"])
            lines.append("loss %s %r %r %r" % ((name,) + loss))
    return lines


def main():
    """Every model's round, then which kernels ran."""
    for name, spec, settings in MODELS:
        for line in run_model(name, spec, settings):
            print(line)
        gc.collect()
        if hasattr(gc, "mem_free"):
            print("heap %s %d" % (name, gc.mem_free()))
    kernels = "native" if "tmf_kernels" in sys.modules else "pure"
    print("kernels %s" % kernels)


if __name__ == "__main__":
    main()
