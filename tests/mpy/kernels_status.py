# Which kernels the agent picked and why, and that a training step runs with them; one JSON line.
# Usage: MICROPYPATH=<folder, with or without tmf_kernels.mpy> micropython <this script>
import json
import sys
from array import array

sys.path.insert(0, ".")
from device_agent import network  # noqa: E402
from device_agent.model import Plan, init_params  # noqa: E402

plan = Plan({"input": [3], "layers": [{"type": "dense", "units": 2}], "loss": "softmax_ce"})
params = array("f", bytes(4 * plan.n_params))
init_params(plan, params, 1)
net = network.Network(plan)
loss = net.train_step(params, array("f", [0.5, -1.0, 2.0]), 1, 0.1, 0)
try:
    network.Network(plan, native=True)
    insisted = ""
except ImportError as e:
    insisted = str(e)
status = {"kernels": network.KERNELS, "why": network.KERNELS_WHY, "net": net.kernels}
status.update({"loss": loss, "insisted": insisted})
print(json.dumps(status))
