"""The federated algorithms as small strategy objects with the same few verbs.

- `round_command(t, version)`: the settings a device receives for round t.
- `local_update(net, theta, xs, ys, command, residual)`: a device's work on its streamed samples
  (simulated with numpy; the real agent runs device_agent.round for TinyMetaFed/TinyReptile).
- `aggregate(theta, updates, t, total)`: the server's update from the cohort's decoded deltas.

The maths lives in pure functions (broker_service.core.aggregate, device_agent.round); a strategy
only chooses which of them to run with which settings.
"""

from __future__ import annotations

import numpy as np

from broker_service.core.aggregate import SparseUpdate, meta_update, outer_step, robust_aggregate
from broker_service.core.device_round import SimResult, simulate_round
from broker_service.core.nn import NumpyNet
from device_agent import codec
from device_agent.round import global_size


class Strategy:
    """Base: a meta-learning algorithm run by the same harness on the same data and seeds."""

    name = "strategy"
    split = False
    federated = True

    def __init__(self, settings: dict):
        self.settings = settings

    def cohort_size(self) -> int:
        """Devices asked to train each round."""
        return int(self.settings["cohort"])

    def global_size(self, net: NumpyNet) -> int:
        """Length of the vector the server keeps and sends (θ_g, or θ without a split)."""
        return global_size(net.plan, self.split)

    def samples_per_update(self) -> int:
        """Samples a device streams (and uses once) in one round."""
        return int(self.settings["recon_samples"]) + int(self.settings["adapt_samples"])

    def round_command(self, t: int, version: int) -> dict:
        """The round command for round t (see device_agent.round.DEFAULTS for the keys)."""
        s = self.settings
        return {
            "round": t,
            "version": version,
            "split": self.split,
            "recon_samples": s["recon_samples"] if self.split else 0,
            "adapt_samples": self.samples_per_update() - (s["recon_samples"] if self.split else 0),
            "recon_lr": s["recon_lr"],
            "adapt_lr": s["adapt_lr"],
            "joint": s["joint"],
            "top_p": s["top_p"],
            "values": s["values"],
            "error_feedback": s["error_feedback"],
            "local_init": s["local_init"],
            "seed": t,
        }

    def local_update(self, net, theta, xs, ys, command, residual=None) -> SimResult:
        """Simulate one device's round and return its encoded update."""
        return simulate_round(net, theta, xs, ys, command, residual)

    def aggregate(self, theta: np.ndarray, updates: list[SparseUpdate], t: int, total: int):
        """Reptile-style interpolation towards the cohort's aggregated delta, decaying step."""
        return self._step(theta, updates, outer_step(float(self.settings["outer_lr"]), t, total))

    def _step(self, theta: np.ndarray, updates: list[SparseUpdate], beta: float) -> np.ndarray:
        method = self.settings.get("aggregation", "mean")
        clip = float(self.settings.get("clip_norm", 0.0))
        scale = float(self.settings.get("clip_scale", 0.0))
        if method == "mean" and clip <= 0 and scale <= 0:
            return meta_update(theta, updates, beta)
        agg = robust_aggregate(
            len(theta), updates, method, clip, float(self.settings.get("trim", 0.2)), scale
        )
        return (theta + np.float32(beta) * agg).astype(np.float32)


class TinyMetaFed(Strategy):
    """Partial local reconstruction, Top-P% sparse uploads, online batch-1, K devices a round."""

    name = "tinymetafed"
    split = True


class TinyReptile(Strategy):
    """TinyMetaFed's parent: no split, dense float32 both ways, one device a round, online."""

    name = "tinyreptile"

    def cohort_size(self) -> int:
        return 1

    def round_command(self, t: int, version: int) -> dict:
        command = super().round_command(t, version)
        command.update(top_p=100.0, values="f32", error_feedback=False)
        return command


class Reptile(Strategy):
    """Nichol et al. 2018: stored data, mini-batches, several inner epochs, Reptile outer step."""

    name = "reptile"

    def local_update(self, net, theta, xs, ys, command, residual=None) -> SimResult:
        params = np.array(theta, dtype=np.float32)
        epochs = int(self.settings["inner_epochs"])
        batch = int(self.settings["inner_batch"])
        order = np.random.default_rng(int(command["seed"]))
        for _ in range(epochs):
            perm = order.permutation(len(xs))
            for lo in range(0, len(xs), batch):
                sel = perm[lo : lo + batch]
                net.sgd_step(params, xs[sel], ys[sel], float(self.settings["adapt_lr"]), 0)
        delta = params - np.asarray(theta, dtype=np.float32)
        payload = codec.encode(
            codec.KIND_DELTA,
            len(delta),
            None,
            delta.tolist(),
            int(command["version"]),
            int(command["round"]),
            len(xs),
        )
        macs = len(xs) * epochs * net.plan.train_step_macs(net.plan.param_layers[0])
        return SimResult(bytes(payload), len(xs), macs, len(delta))


class FedAvg(Reptile):
    """McMahan et al. 2017: the sample-weighted average of locally trained models (β = 1)."""

    name = "fedavg"

    def aggregate(self, theta, updates, t, total):
        return self._step(theta, updates, 1.0)


class NoFederation(Strategy):
    """The floor: a new device trains from a random initialisation on its k-shot data alone."""

    name = "no_federation"
    federated = False

    def cohort_size(self) -> int:
        return 0


ALGORITHMS = {cls.name: cls for cls in (TinyMetaFed, TinyReptile, Reptile, FedAvg, NoFederation)}
