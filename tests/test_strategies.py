"""The strategies' server verbs, the simulated client each one picks, the named random streams
and the round's cohort."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from broker_service.core.cohort import round_cohort
from broker_service.core.device_round import simulate_round
from broker_service.core.hyperparams import settings_for
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import ALGORITHMS, FedAvg, Reptile, TinyMetaFed, TinyReptile
from broker_service.core.streams import (
    CURVE_EPISODES,
    FINAL_EPISODES,
    device_stream,
    named_stream,
    stable_id,
)
from broker_service.sim.clients import local_update
from broker_service.usecases.sine import SPEC as SINE_SPEC
from device_agent import codec
from tests.helpers import fresh_params

SETTINGS = settings_for("sine", rounds=10)


def _samples(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    xs = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    return xs, (2.0 * np.sin(5 * xs + 1.0)).astype(np.float32)


def test_outer_step_decays_for_reptile_style_strategies_and_is_one_for_fedavg():
    beta0 = float(SETTINGS["outer_lr"])
    for cls in (TinyMetaFed, TinyReptile, Reptile):
        strategy = cls(SETTINGS)
        assert strategy.outer_step(0, 10) == pytest.approx(beta0)
        assert strategy.outer_step(5, 10) == pytest.approx(beta0 / 2)
    assert [FedAvg(SETTINGS).outer_step(t, 10) for t in (0, 5, 9)] == [1.0, 1.0, 1.0]


def test_only_reptile_and_fedavg_train_on_stored_data():
    stored = {name for name, cls in ALGORITHMS.items() if cls.stored_data}
    assert stored == {"reptile", "fedavg"}


def test_online_strategies_simulate_the_agents_round():
    plan, params = fresh_params(SINE_SPEC, seed=3)
    net = NumpyNet(plan)
    strategy = TinyMetaFed(SETTINGS)
    theta = np.array(params, dtype=np.float32)[: strategy.global_size(net)]
    xs, ys = _samples(strategy.samples_per_update())
    command = strategy.round_command(4, version=4)
    got = local_update(strategy, net, theta, xs, ys, command, np.zeros(len(theta), np.float32))
    want = simulate_round(net, theta, xs, ys, command, np.zeros(len(theta), np.float32))
    assert got == want


def test_stored_data_strategies_send_a_dense_delta_of_their_epochs():
    plan, params = fresh_params(SINE_SPEC, seed=3)
    net = NumpyNet(plan)
    strategy = Reptile(SETTINGS)
    theta = np.array(params, dtype=np.float32)[: strategy.global_size(net)]
    n = strategy.samples_per_update()
    xs, ys = _samples(n)
    result = local_update(strategy, net, theta, xs, ys, strategy.round_command(1, version=1))
    header, idx, values = codec.decode(result.payload)
    assert list(idx) == list(range(len(theta))) and result.nnz == len(values) == len(theta)
    assert result.samples == header.samples == n
    epochs = int(SETTINGS["inner_epochs"])
    assert result.macs == n * epochs * plan.train_step_macs(plan.param_layers[0])
    assert np.abs(np.asarray(values)).max() > 0


def test_named_streams_keep_their_published_ids():
    assert (CURVE_EPISODES, FINAL_EPISODES) == (11, 13)
    a = named_stream(4, FINAL_EPISODES).random(3)
    np.testing.assert_array_equal(a, np.random.default_rng([4, 13]).random(3))


def test_round_cohort_ignores_the_order_devices_are_listed_in():
    devices = ["d%02d" % i for i in range(12)]
    first = round_cohort(devices, 4, seed=1, t=7)
    assert first == round_cohort(list(reversed(devices)), 4, seed=1, t=7)
    assert len(set(first)) == 4 and first != round_cohort(devices, 4, seed=1, t=8)


def test_every_device_of_a_round_has_its_own_sample_stream():
    """One stream per (seed, round, device): 100 sine and 200 omniglot-style ids, and ids whose
    bytes sum to the same value, all draw different samples; the stream is stable across runs."""
    ids = ["sine-%03d" % i for i in range(100)] + ["omniglot-%03d" % i for i in range(200)]
    ids += ["ab", "ba"]  # equal byte sums
    draws = {device_stream(0, 3, d).integers(0, 2**62) for d in ids}
    assert len(draws) == len(ids)
    assert len({stable_id(d) for d in ids}) == len(ids)
    assert stable_id("sine-000") == int.from_bytes(
        hashlib.blake2b(b"sine-000", digest_size=8).digest(), "little"
    )
    a = device_stream(0, 3, "sine-007").random(4)
    np.testing.assert_array_equal(a, device_stream(0, 3, "sine-007").random(4))
    assert not np.array_equal(a, device_stream(0, 4, "sine-007").random(4))
    assert not np.array_equal(a, device_stream(1, 3, "sine-007").random(4))
