"""The server optimiser (core/serveropt.py): Reptile's step and Adam as pure
functions, and the strategies that keep its state."""

from __future__ import annotations

import numpy as np
import pytest

from broker_service.core.aggregate import SparseUpdate, meta_update
from broker_service.core.hyperparams import settings_for
from broker_service.core.serveropt import (
    ServerOptimiser,
    ServerState,
    initial_state,
    server_update,
    state_fits,
)
from broker_service.core.strategies import TinyMetaFed
from broker_service.server import checkpoint

THETA = np.array([1.0, -2.0, 0.5, 0.0], dtype=np.float32)
AGG = np.array([0.1, -0.4, 0.0, 2.0], dtype=np.float32)


def test_sgd_is_reptiles_step_and_keeps_no_moments():
    up = SparseUpdate(np.arange(4), AGG, 5)
    new, state = server_update(THETA, AGG, 0.3, ServerOptimiser("sgd"), ServerState())
    np.testing.assert_array_equal(new, meta_update(THETA, [up], 0.3))
    assert (state.step, state.arrays) == (1, {})


def test_adam_takes_about_lr_per_coordinate_whatever_the_deltas_scale():
    opt = ServerOptimiser("adam", 0.9, 0.99, 1e-12)
    for scale in (1e-3, 1.0, 1e3):
        new, state = server_update(THETA, scale * AGG, 0.01, opt, initial_state(opt, 4))
        step = (new - THETA).astype(np.float64)
        # m = 0.1 g, v ≈ 0.01 g²: each moved coordinate moves by lr · sign(g)
        np.testing.assert_allclose(step[[0, 1, 3]], 0.01 * np.sign(AGG[[0, 1, 3]]), rtol=1e-3)
        assert step[2] == 0.0 and state.step == 1
        np.testing.assert_allclose(state.arrays["m"], 0.1 * scale * AGG, rtol=1e-5)


def test_server_update_is_pure_and_a_state_that_does_not_fit_starts_afresh():
    opt = ServerOptimiser("adam")
    state = initial_state(opt, 4)
    before = {k: v.copy() for k, v in state.arrays.items()}
    theta = THETA.copy()
    server_update(theta, AGG, 0.1, opt, state)
    np.testing.assert_array_equal(theta, THETA)
    for key, value in before.items():
        np.testing.assert_array_equal(state.arrays[key], value)
    wrong = ServerState(7, {"m": np.zeros(3, np.float32)})
    assert not state_fits(opt, wrong, 4)
    fresh = server_update(THETA, AGG, 0.1, opt, initial_state(opt, 4))
    again = server_update(THETA, AGG, 0.1, opt, wrong)
    np.testing.assert_array_equal(fresh[0], again[0])


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"server_optimiser": "adagrad"}, "server_optimiser 'adagrad' is unknown"),
        ({"server_beta1": 1.0}, "server_beta1 and server_beta2 must be in"),
        ({"server_eps": 0.0}, "server_eps must be a positive number"),
        ({"server_optimiser": "momentum"}, "server_optimiser 'momentum' is unknown"),
        ({"aggregation": "median"}, "aggregation 'median' is unknown"),
    ],
)
def test_bad_server_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        TinyMetaFed(settings_for("sine", **settings))


def _cohort(rng, n=40):
    return [
        SparseUpdate(
            np.sort(rng.choice(n, 4, replace=False)), rng.standard_normal(4).astype("f4"), 30
        )
        for _ in range(3)
    ]


def test_a_strategy_keeps_its_moments_and_a_refused_step_leaves_them(tmp_path):
    strategy = TinyMetaFed(settings_for("sine", rounds=10, server_optimiser="adam"))
    rng = np.random.default_rng(0)
    theta = np.zeros(40, dtype=np.float32)
    for t in range(3):
        theta = strategy.aggregate(theta, _cohort(rng), t, 10)
    kept = strategy.server_state()
    assert kept["step"] == 3 and kept["optimiser"] == "adam"
    assert np.any(kept["m"] != 0) and np.any(kept["v"] > 1e-6)
    poison = [SparseUpdate(np.array([0]), np.array([np.inf], dtype=np.float32), 30)]
    with np.errstate(invalid="ignore"):
        out = strategy.aggregate(theta, poison, 3, 10)
    assert not np.all(np.isfinite(out))
    assert strategy.server.step == 3
    np.testing.assert_array_equal(strategy.server_state()["m"], kept["m"])


def test_a_restart_through_the_checkpoint_continues_with_the_same_moments(tmp_path):
    settings = settings_for("sine", rounds=10, server_optimiser="adam", coverage_mean=True)
    rng = np.random.default_rng(1)
    rounds = [_cohort(rng) for _ in range(4)]
    first = TinyMetaFed(settings)
    theta = np.zeros(40, dtype=np.float32)
    for t in range(3):
        theta = first.aggregate(theta, rounds[t], t, 10)
    path = tmp_path / "c.json"
    ckpt = checkpoint.Checkpoint({}, theta, 3, "tinymetafed", "sine", settings)
    ckpt.server_state = first.server_state()
    checkpoint.save(path, ckpt)
    back = checkpoint.load(path)
    second = TinyMetaFed(settings)
    assert second.restore_server_state(back.server_state, len(back.theta))
    resumed = second.aggregate(back.theta, rounds[3], 3, 10)
    np.testing.assert_array_equal(first.aggregate(theta, rounds[3], 3, 10), resumed)
    # without the moments the same round moves θ differently
    assert not np.array_equal(TinyMetaFed(settings).aggregate(theta, rounds[3], 3, 10), resumed)
    # another optimiser, or another length, starts afresh
    plain = TinyMetaFed(dict(settings, server_optimiser="sgd"))
    assert not plain.restore_server_state(back.server_state, 40)
    assert not second.restore_server_state(back.server_state, 41)
    assert not second.restore_server_state(dict(back.server_state, step="3"), 40)
    assert second.server.step == 0


def test_the_service_keeps_the_moments_across_a_restart(tmp_path):
    from broker_service.observe.logs import EventLog
    from broker_service.server.config import ServiceConfig
    from broker_service.server.service import AggregationService

    log = tmp_path / "service.log"
    cfg = ServiceConfig(
        use_case="sine",
        state_dir=str(tmp_path / "state"),
        eval_devices=1,
        settings={"server_optimiser": "adam"},
    )
    first = AggregationService(cfg, EventLog(path=log))
    rng = np.random.default_rng(2)
    updates = _cohort(rng, first.n)
    first.theta = first.admission.bounds.step(
        first.strategy, first.theta, updates, 0, first.total_rounds
    )
    first.round = 1
    first._save()
    first.lock.release()
    second = AggregationService(cfg, EventLog(path=log))
    assert second.round == 1 and second.strategy.server.step == 1
    np.testing.assert_array_equal(
        second.strategy.server_state()["m"], first.strategy.server_state()["m"]
    )
    assert np.any(second.strategy.server_state()["m"] != 0)
    second.lock.release()
    cfg.settings = {"server_optimiser": "sgd"}
    third = AggregationService(cfg, EventLog(path=log))
    third.lock.release()
    assert third.strategy.server.step == 0
    assert third.strategy.server_state() == {"optimiser": "sgd", "step": 0}  # Adam's dropped
