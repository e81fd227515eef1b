"""Simulated devices over a real broker: real agents (device_agent.Agent, paho transport) whose
round is computed with numpy on the use case's data, one thread each.

A device's samples in round t are drawn from the use case with the generator of
(seed, t, device) — the same samples the bench's simulation uses, and the same again if the
round is re-run — so a session is reproducible.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from broker_service.core.device_round import simulate_round
from broker_service.core.nn import NumpyNet
from broker_service.sim.simulation import device_rng
from broker_service.usecases.base import UseCase
from device_agent import codec
from device_agent.agent import Agent
from device_agent.config import make_config
from device_agent.robust import RobustAgent
from device_agent.round import round_settings


def agent_config(
    device_id: str,
    broker_host: str,
    broker_port: int,
    use_case: UseCase,
    fleet: str = "default",
    prefix: str = "tinymetafed",
    **extra,
) -> dict:
    """A simulated device's agent config on the broker at host:port (`extra` keys added, such
    as a sleeping device's "sleep" block)."""
    return make_config(
        {
            "device_id": device_id,
            "fleet": fleet,
            "prefix": prefix,
            "use_case": use_case.name,
            "spec": use_case.spec,
            "broker": {"host": broker_host, "port": broker_port, "keepalive": 15},
            **extra,
        }
    )


class NumpyRunner:
    """A round_runner for Agent: the agent's round, computed by broker_service.core.device_round."""

    def __init__(self, use_case: UseCase, net: NumpyNet, seed: int):
        self.use_case = use_case
        self.net = net
        self.seed = seed
        self.residual: np.ndarray | None = None
        self.last_round: int | None = None

    def __call__(self, agent: Agent, command: dict):
        settings = round_settings(command)
        _, _, values = codec.decode(agent.model_buf)
        theta = np.asarray(values, dtype=np.float32)
        n = len(theta)
        count = int(settings["adapt_samples"]) + (
            int(settings["recon_samples"]) if settings["split"] else 0
        )
        xs, ys = self.samples(agent, command, count)
        residual, last_round = self.memory(agent, n)
        result = simulate_round(self.net, theta, xs, ys, command, residual, last_round)
        if settings["error_feedback"]:
            self.last_round = int(command["round"])
        return result

    def samples(self, agent: Agent, command: dict, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The round's `count` samples: the use case's stream of (seed, round, device)."""
        rng = device_rng(self.seed, int(command["round"]), agent.device_id)
        return self.use_case.stream(agent.device_id, count, rng)

    def memory(self, agent: Agent, n: int) -> tuple[np.ndarray, int | None]:
        """The error-feedback memory of the round (updated in place) and the round that last
        updated it: the runner's own (one runner a device)."""
        if self.residual is None or len(self.residual) != n:
            self.residual = np.zeros(n, dtype=np.float32)
            self.last_round = None
        return self.residual, self.last_round


class SimulatedFleet:
    """N agents in threads; `start()`, then `stop()`."""

    def __init__(
        self,
        broker_host: str,
        broker_port: int,
        use_case: UseCase,
        devices: int,
        seed: int = 0,
        fleet: str = "default",
        prefix: str = "tinymetafed",
        logger: Callable | None = None,
    ):
        if devices > len(use_case.device_ids):
            raise ValueError(
                "the %s use case has %d devices, %d asked for"
                % (use_case.name, len(use_case.device_ids), devices)
            )
        self.agents: list[Agent] = []
        self.threads: list[threading.Thread] = []
        net = NumpyNet(use_case.spec)
        quiet = logger or (lambda *a, **k: None)
        for device_id in use_case.device_ids[:devices]:
            cfg = agent_config(device_id, broker_host, broker_port, use_case, fleet, prefix)
            self.agents.append(
                Agent(cfg, iter(()), round_runner=NumpyRunner(use_case, net, seed), logger=quiet)
            )

    def start(self) -> SimulatedFleet:
        for agent in self.agents:
            run = RobustAgent(agent).run
            thread = threading.Thread(target=run, name=agent.device_id, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        for agent in self.agents:
            agent.stopping = True
        for thread in self.threads:
            thread.join(timeout)
