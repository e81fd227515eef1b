"""The MicroPython agent's pure-Python maths and the server's numpy maths agree (1e-5 relative)."""

from array import array

import numpy as np
import pytest

from broker_service.core.device_round import simulate_round, top_k_indices
from broker_service.core.nn import NumpyNet
from broker_service.usecases.sine import SPEC as SINE_SPEC
from device_agent import codec
from device_agent.network import Network
from device_agent.round import residual_applies, round_settings, run_round
from device_agent.topk import select_top_k
from tests.helpers import LAYER_SPECS, fresh_params, rel_err, sample

TOL = 1e-5


@pytest.mark.parametrize("name", sorted(LAYER_SPECS))
def test_forward_parity(name):
    plan, params = fresh_params(LAYER_SPECS[name])
    x, _ = sample(plan, np.random.default_rng(2))
    agent = list(Network(plan).forward(params, x))
    numpy_out = NumpyNet(plan).predict(np.array(params), x[None])[0]
    assert rel_err(agent, numpy_out) < TOL


@pytest.mark.parametrize("name", sorted(LAYER_SPECS))
def test_sgd_steps_parity(name):
    plan, params = fresh_params(LAYER_SPECS[name])
    theta = np.array(params, dtype=np.float32)
    net, twin = Network(plan), NumpyNet(plan)
    rng = np.random.default_rng(7)
    for _ in range(4):
        x, y = sample(plan, rng)
        target = y if plan.loss == "softmax_ce" else list(y)
        loss_a = net.train_step(params, x, target, 0.05, plan.param_layers[0])
        loss_b = twin.sgd_step(theta, x[None], np.array([y]), 0.05, plan.param_layers[0])
        assert loss_a == pytest.approx(loss_b, rel=TOL)
    assert rel_err(params, theta) < TOL


def test_frozen_layers_pass_gradients_but_do_not_change():
    plan, params = fresh_params(LAYER_SPECS["cnn"])
    before = array("f", params)
    x, y = sample(plan, np.random.default_rng(3))
    first, head = plan.param_layers[0], plan.param_layers[-1]
    Network(plan).train_step(params, x, y, 0.1, first, head - 1)
    head_off = plan.layers[head].w_off
    assert list(params[head_off:]) == list(before[head_off:])
    assert list(params[:head_off]) != list(before[:head_off])


def test_top_k_parity_with_ties():
    rng = np.random.default_rng(0)
    delta = np.round(rng.standard_normal(500), 1).astype(np.float32)  # many ties
    for k in (1, 7, 50, 499, 500):
        agent = list(select_top_k(array("f", delta.tolist()), k))
        assert agent == top_k_indices(delta, k).tolist()


@pytest.mark.parametrize("split,joint", [(True, True), (True, False), (False, True)])
def test_whole_device_round_parity(split, joint):
    """One TinyMetaFed (θ_l joint or frozen) or TinyReptile round: agent payload == numpy
    simulator payload."""
    plan, params = fresh_params(SINE_SPEC, seed=11)
    theta_g = np.array(params, dtype=np.float32)[: plan.n_global if split else plan.n_params]
    rng = np.random.default_rng(4)
    xs = rng.uniform(-1, 1, (30, 1)).astype(np.float32)
    ys = (2.0 * np.sin(5 * xs + 1.0)).astype(np.float32)
    command = {
        "round": 3,
        "version": 3,
        "split": split,
        "recon_samples": 10,
        "adapt_samples": 20,
        "recon_lr": 0.05,
        "adapt_lr": 0.02,
        "joint": joint,
        "top_p": 10.0,
        "values": "f32",
        "error_feedback": True,
        "seed": 9,
    }
    residual_a = array("f", [0.001] * len(theta_g))
    residual_b = np.full(len(theta_g), 0.001, dtype=np.float32)
    agent = run_round(
        Network(plan), params, zip(xs, [list(y) for y in ys], strict=True), command, residual_a
    )
    twin = simulate_round(NumpyNet(plan), theta_g, xs, ys, command, residual_b)
    _, idx_a, val_a = codec.decode(agent.payload)
    _, idx_b, val_b = codec.decode(twin.payload)
    assert list(idx_a) == list(idx_b)
    assert rel_err(val_a, val_b) < TOL
    assert rel_err(residual_a, residual_b) < TOL
    assert agent.macs == twin.macs and agent.samples == twin.samples == (30 if split else 20)
    assert agent.adapt_loss == pytest.approx(twin.adapt_loss, rel=TOL)


@pytest.mark.parametrize(
    "last_round,added", [(None, True), (2, True), (0, True), (3, False), (7, False)]
)
def test_residual_parity_and_a_new_session_drops_the_residual(last_round, added):
    """Round 3 after the device's last round `last_round`: both twins add the residual unless
    the round numbers went back (a new session) and keep the same new residual."""
    plan, params = fresh_params(SINE_SPEC, seed=11)
    theta_g = np.array(params, dtype=np.float32)[: plan.n_global]
    rng = np.random.default_rng(6)
    xs = rng.uniform(-1, 1, (30, 1)).astype(np.float32)
    ys = (2.0 * np.sin(5 * xs + 1.0)).astype(np.float32)
    start = rng.normal(0.0, 0.05, len(theta_g)).astype(np.float32)
    command = {"round": 3, "version": 3, "adapt_lr": 0.02, "values": "f32", "seed": 9}
    pairs = list(zip(xs, [list(y) for y in ys], strict=True))
    residual_a = array("f", start)
    agent = run_round(Network(plan), array("f", params), pairs, command, residual_a, last_round)
    residual_b = start.copy()
    twin = simulate_round(NumpyNet(plan), theta_g, xs, ys, command, residual_b, last_round)
    _, idx_a, val_a = codec.decode(agent.payload)
    assert list(idx_a) == list(codec.decode(twin.payload)[1])
    assert rel_err(val_a, codec.decode(twin.payload)[2]) < TOL
    assert rel_err(residual_a, residual_b) < TOL
    want = np.linalg.norm(start) if added else 0.0
    assert twin.residual_norm == pytest.approx(want, rel=TOL)
    fresh = simulate_round(NumpyNet(plan), theta_g, xs, ys, command, start.copy(), 2)
    assert (fresh.payload == twin.payload) == added


def test_residual_applies_unless_the_rounds_went_back():
    s = round_settings({"round": 10})
    assert residual_applies(s, None) and residual_applies(s, 9) and residual_applies(s, 0)
    assert not residual_applies(s, 10) and not residual_applies(s, 12)


def test_joint_adaptation_trains_the_head_and_frozen_does_not():
    """`joint` decides whether θ_l keeps learning after reconstruction (same in both twins)."""
    plan, params = fresh_params(SINE_SPEC, seed=11)
    rng = np.random.default_rng(5)
    xs = rng.uniform(-1, 1, (30, 1)).astype(np.float32)
    ys = (2.0 * np.sin(5 * xs + 1.0)).astype(np.float32)
    pairs = list(zip(xs, [list(y) for y in ys], strict=True))
    base = {
        "recon_samples": 10,
        "adapt_samples": 20,
        "recon_lr": 0.05,
        "adapt_lr": 0.05,
        "top_p": 10.0,
        "values": "f32",
        "error_feedback": False,
        "seed": 9,
    }
    heads, macs = {}, {}
    for adapt in (0, 20):
        for joint in (True, False):
            p = array("f", params)
            result = run_round(
                Network(plan), p, pairs, dict(base, joint=joint, adapt_samples=adapt)
            )
            heads[adapt, joint] = np.array(p[plan.n_global :])
            macs[adapt, joint] = result.macs
    reconstructed = heads[0, True]
    assert np.array_equal(heads[20, False], reconstructed)
    assert np.abs(heads[20, True] - reconstructed).max() > 1e-3
    assert macs[20, True] > macs[20, False] and macs[0, True] == macs[0, False]


def test_a_round_does_not_depend_on_what_the_network_did_before():
    """The agent reuses its Δ buffers every round: a TinyMetaFed round after a TinyReptile round
    (whose Δ filled the whole buffer) sends exactly what it sends on a fresh network."""
    plan, params = fresh_params(SINE_SPEC, seed=11)
    rng = np.random.default_rng(5)
    xs = rng.uniform(-1, 1, (30, 1)).astype(np.float32)
    samples = [(x, [float(2.0 * np.sin(5 * x[0]))]) for x in xs]
    dense = {"round": 1, "version": 1, "split": False, "top_p": 100.0, "seed": 3}
    sparse = {"round": 2, "version": 2, "split": True, "top_p": 10.0, "seed": 4}
    used = Network(plan)
    run_round(used, array("f", params), iter(samples), dense)
    after = run_round(used, array("f", params), iter(samples), sparse)
    fresh = run_round(Network(plan), array("f", params), iter(samples), sparse)
    assert bytes(after.payload) == bytes(fresh.payload)
