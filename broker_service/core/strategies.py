"""The federated algorithms as strategy objects: the server's side of each, in a few verbs.

- `cohort_size()`: how many devices train each round;
- `global_size(net)`, `round_command(t, version)`, `samples_per_update()`: what a device is sent
  and how many samples it uses;
- `aggregate(theta, updates, t, total)`: the new θ from the cohort's decoded deltas, with
  `outer_step(t, total)` as the step size of the server optimiser (core.serveropt), whose state
  (`server_state()` / `restore_server_state()`) the service keeps in its checkpoint.

What a device does with its samples is not here: real devices run device_agent.round, and the
simulation picks its simulated client by the plain attribute `stored_data`
(broker_service.sim.clients). The maths lives in pure functions (broker_service.core.aggregate);
a strategy only chooses which of them to run with which settings.
"""

from __future__ import annotations

import numpy as np

from broker_service.core.aggregate import SparseUpdate, aggregate_mean, all_finite
from broker_service.core.aggregate import outer_step as decaying_step
from broker_service.core.nn import NumpyNet
from broker_service.core.serveropt import (
    ServerOptimiser,
    ServerState,
    initial_state,
    server_update,
    state_fits,
)
from broker_service.core.settings import DEVICE_SETTINGS, check_settings
from device_agent.round import DEFAULTS, global_size


class Strategy:
    """Base: a meta-learning algorithm run by the same harness on the same data and seeds."""

    name = "strategy"
    split = False
    federated = True
    stored_data = False
    """False: devices stream samples and use each once (the agent's round); True: a device
    trains on its stored samples for several epochs of mini-batches (Reptile, FedAvg)."""
    dense = False
    """True: devices upload every entry of their delta as float32 (TinyReptile, Reptile,
    FedAvg); the round command says so (`top_p` 100, `values` f32, no error feedback), and the
    service's entry budget (core.bounds.entry_budget) follows the command."""
    served = True
    """False: a simulation baseline the service refuses to run (devices stream their samples
    and use each once, so an algorithm that trains on stored samples cannot run on them)."""

    def __init__(self, settings: dict):
        check_settings(settings)  # ValueError naming a bad setting (core/settings.py)
        self.settings = settings
        self.optimiser = ServerOptimiser.from_settings(settings)
        self.server = ServerState()

    def cohort_size(self) -> int:
        """Devices asked to train each round."""
        return int(self.settings["cohort"])

    def global_size(self, net: NumpyNet) -> int:
        """Length of the vector the server keeps and sends (θ_g, or θ without a split)."""
        return global_size(net.plan, self.split)

    def samples_per_update(self) -> int:
        """Samples a device uses in one round."""
        return int(self.settings["recon_samples"]) + int(self.settings["adapt_samples"])

    def round_command(self, t: int, version: int) -> dict:
        """The round command for round t: the round, model version, split and seed, and every
        setting flagged for the devices (core.settings.DEVICE_SETTINGS; the agent's
        device_agent.round.DEFAULTS says what an omitted one means). Without a split every
        sample adapts; a dense algorithm asks for every entry as float32."""
        s = self.settings
        command = {"round": t, "version": version, "split": self.split, "seed": t}
        command.update((key, s[key]) for key in DEVICE_SETTINGS)
        if not self.split:
            command.update(recon_samples=0, adapt_samples=self.samples_per_update())
        if self.dense:
            command.update(top_p=100.0, values="f32", error_feedback=False)
        return command

    def model_values(self) -> str:
        """The value encoding of the MODEL payload that carries θ (`model_values`: f32, f16 or
        int8 with a scale); the server keeps θ in float32 whatever is sent."""
        return str(self.settings["model_values"])

    def outer_step(self, t: int, total_rounds: int) -> float:
        """β_t of round t: Reptile's linearly decaying step from `outer_lr`."""
        return decaying_step(float(self.settings["outer_lr"]), t, total_rounds)

    def aggregate(
        self, theta: np.ndarray, updates: list[SparseUpdate], t: int, total_rounds: int
    ) -> np.ndarray:
        """θ moved by the server optimiser with step β_t along the cohort's aggregated delta
        (the sample-weighted mean of the updates as the service's bounds clipped them; over the
        devices that sent each coordinate with the experimental `coverage_mean`). The
        optimiser's state advances only when the new θ is finite (a refused step leaves it as
        it was)."""
        agg = aggregate_mean(len(theta), updates, bool(self.settings["coverage_mean"]))
        beta = self.outer_step(t, total_rounds)
        new, state = server_update(theta, agg, beta, self.optimiser, self.server)
        if all_finite(new):
            self.server = state
        return new

    def server_state(self) -> dict:
        """The server optimiser's state for the checkpoint: its name, steps and moments."""
        return {
            "optimiser": self.optimiser.name,
            "step": self.server.step,
            **(self.server.arrays or {}),
        }

    def restore_server_state(self, doc: dict, n: int) -> bool:
        """Take over a checkpoint's optimiser state (`server_state()`'s form) for a θ of length
        n; False (and a fresh state) when it is of another optimiser or length, not finite, or
        without a step count."""
        arrays = {k: v for k, v in doc.items() if isinstance(v, np.ndarray)}
        step = doc.get("step")
        state = ServerState(step if isinstance(step, int) and step >= 0 else 0, arrays)
        kept = isinstance(step, int) and doc.get("optimiser") == self.optimiser.name
        if not kept or not state_fits(self.optimiser, state, n):
            self.server = initial_state(self.optimiser, n)
            return False
        self.server = state
        return True


class TinyMetaFed(Strategy):
    """Partial local reconstruction, Top-P% sparse uploads, online batch-1, K devices a round."""

    name = "tinymetafed"
    split = True


class TinyReptile(Strategy):
    """TinyMetaFed's parent: no split, dense float32 both ways, one device a round, online."""

    name = "tinyreptile"
    dense = True

    def cohort_size(self) -> int:
        return 1

    def model_values(self) -> str:
        return "f32"


class Reptile(Strategy):
    """Nichol et al. 2018: stored data, mini-batches, several inner epochs, Reptile outer step."""

    name = "reptile"
    stored_data = True
    dense = True
    served = False


class FedAvg(Reptile):
    """McMahan et al. 2017: the sample-weighted average of locally trained models (β = 1)."""

    name = "fedavg"

    def outer_step(self, t: int, total_rounds: int) -> float:
        """Always 1: the new θ is the cohort's average model."""
        return 1.0


class NoFederation(Strategy):
    """The floor: a new device trains from a random initialisation on its k-shot data alone."""

    name = "no_federation"
    federated = False

    def cohort_size(self) -> int:
        return 0


ALGORITHMS = {cls.name: cls for cls in (TinyMetaFed, TinyReptile, Reptile, FedAvg, NoFederation)}


def wire_command(command: dict) -> dict:
    """`command` without the settings equal to the agent's DEFAULTS, which its round_settings
    fills back in: the bytes every invited device receives each round. A value counts as equal
    only with the same JSON type (1 is not 1.0 is not True)."""
    out = {}
    for key, value in command.items():
        default = DEFAULTS.get(key, _NO_DEFAULT)
        if type(value) is type(default) and value == default:
            continue
        out[key] = value
    return out


_NO_DEFAULT = object()
