"""Closed-form heads (device_agent.heads): the maths, the agent against its numpy twin, the
settings' checks and the few-shot rule."""

import math
from array import array

import numpy as np
import pytest

from broker_service.core import fewshot
from broker_service.core.device_round import fit_head, full_params, simulate_round
from broker_service.core.hyperparams import settings_for
from broker_service.core.nn import NumpyNet
from broker_service.core.strategies import TinyMetaFed, wire_command
from device_agent import codec, heads, limits, reasons, validate
from device_agent.model import Plan
from device_agent.network import Network
from device_agent.round import HEAD_INITS, run_round
from device_agent.specs import spec_for
from tests.helpers import LAYER_SPECS, fresh_params, rel_err

TOL = 1e-5
MLP = {
    "input": [3],
    "layers": [{"type": "dense", "units": 5}, {"type": "relu"}, {"type": "dense", "units": 2}],
    "loss": "mse",
}


def agent_fit(plan, params, xs, ys, ridge=0.5):
    used, loss = heads.fit_head(Network(plan), params, zip(xs, ys, strict=True), len(xs), ridge)
    assert used == len(xs)
    return loss


def features(plan, params, xs):
    trace = NumpyNet(plan).forward(np.array(params), np.array(xs))
    return trace.inputs[plan.local_layers[0]].reshape(len(xs), -1).astype(np.float64)


def test_the_ridge_head_solves_the_regularised_normal_equations():
    plan, params = fresh_params(MLP, seed=3)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((12, 3)).astype(np.float32)
    ys = rng.standard_normal((12, 2)).astype(np.float32)
    agent_fit(plan, params, xs, [list(y) for y in ys], ridge=0.5)
    h = np.hstack([features(plan, params, xs), np.ones((12, 1))])
    want = np.linalg.solve(h.T @ h + 0.5 * np.eye(6), h.T @ ys)  # (6, 2)
    layer = plan.layers[plan.local_layers[0]]
    w = np.array(params[layer.w_off : layer.b_off]).reshape(2, 5)
    b = np.array(params[layer.b_off : layer.b_off + 2])
    assert rel_err(np.vstack([w.T, b]), want) < TOL


def test_prototype_head_scores_by_distance_and_unseen_classes_never_win():
    plan, params = fresh_params(LAYER_SPECS["relu"], seed=2)
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((9, 5)).astype(np.float32)
    labels = [0, 2, 0, 2, 2, 0, 0, 2, 2]  # class 1 never seen
    agent_fit(plan, params, xs, labels)
    h = features(plan, params, xs)
    layer = plan.layers[plan.local_layers[0]]
    w = np.array(params[layer.w_off : layer.b_off]).reshape(3, 6)
    b = np.array(params[layer.b_off : layer.b_off + 3])
    means = [h[np.array(labels) == c].mean(axis=0) for c in (0, 2)]
    assert rel_err(w[[0, 2]], 2 * np.array(means)) < TOL
    assert rel_err(b[[0, 2]], [-(m @ m) for m in means]) < TOL
    assert not w[1].any() and b[1] == pytest.approx(min(b[0], b[2]))
    logits = h @ w.T + b
    # logits are -|h - mu_c|^2 + |h|^2: the nearest prototype wins; class 1 never does
    dist = np.stack([((h - m) ** 2).sum(axis=1) for m in means], axis=1)
    assert np.array_equal(logits[:, [0, 2]].argmax(axis=1), dist.argmin(axis=1))
    assert not np.any(logits.argmax(axis=1) == 1)


def test_without_samples_the_closed_form_head_is_zero():
    for spec in (MLP, LAYER_SPECS["relu"]):
        plan, params = fresh_params(spec, seed=2)
        assert agent_fit(plan, params, [], []) == 0.0
        assert not any(params[plan.n_global :])


def test_which_models_get_a_closed_form_head():
    assert heads.closed_form_applies(Plan(MLP))
    assert heads.closed_form_applies(Plan(LAYER_SPECS["cnn"]))
    assert not heads.closed_form_applies(Plan(dict(MLP, local_layers=2)))
    assert not heads.closed_form_applies(Plan(dict(MLP, local_layers=0)))
    tail = dict(MLP, layers=[*MLP["layers"], {"type": "tanh"}])
    assert not heads.closed_form_applies(Plan(tail))
    wide = dict(
        MLP, layers=[{"type": "dense", "units": limits.MAX_RIDGE_FEATURES + 1}] + MLP["layers"][1:]
    )
    assert not heads.closed_form_applies(Plan(wide))
    for use_case in ("sine", "omniglot", "kws", "occupancy"):
        assert heads.closed_form_applies(Plan(spec_for(use_case)))


@pytest.mark.parametrize("name", ["relu", "cnn", "dense", "conv2d"])
def test_agent_head_equals_the_numpy_twin(name):
    plan, params = fresh_params(LAYER_SPECS[name], seed=5)
    rng = np.random.default_rng(3)
    n = 7
    xs = rng.standard_normal((n, int(np.prod(plan.input_shape)))).astype(np.float32)
    if plan.loss == "softmax_ce":
        ys = rng.integers(0, plan.output_size, n)
        agent_ys = [int(y) for y in ys]
    else:
        ys = rng.standard_normal((n, plan.output_size)).astype(np.float32)
        agent_ys = [list(y) for y in ys]
    twin = np.array(params)
    loss_b = fit_head(NumpyNet(plan), twin, xs, ys, 0.5)
    loss_a = agent_fit(plan, params, xs, agent_ys)
    assert loss_a == pytest.approx(loss_b, rel=TOL)
    assert rel_err(params[plan.n_global :], twin[plan.n_global :]) < TOL


@pytest.mark.parametrize("use_case", ["sine", "occupancy"])
@pytest.mark.parametrize("joint", [True, False])
def test_whole_round_with_a_closed_form_head_parity(use_case, joint):
    plan, params = fresh_params(spec_for(use_case), seed=11)
    theta_g = np.array(params, dtype=np.float32)[: plan.n_global]
    rng = np.random.default_rng(4)
    xs = rng.uniform(-1, 1, (30, int(np.prod(plan.input_shape)))).astype(np.float32)
    if plan.loss == "mse":
        ys = (2.0 * np.sin(5 * xs + 1.0)).astype(np.float32)
        agent_ys = [list(y) for y in ys]
    else:
        ys = (xs[:, 0] > 0).astype(np.int64)
        agent_ys = [int(y) for y in ys]
    command = {
        "round": 3,
        "version": 3,
        "recon_samples": 10,
        "adapt_samples": 20,
        "recon_lr": 0.05,
        "adapt_lr": 0.02,
        "joint": joint,
        "top_p": 10.0,
        "values": "f32",
        "error_feedback": False,
        "seed": 9,
        "head_init": "closed_form",
        "head_ridge": 0.5,
    }
    agent = run_round(Network(plan), params, zip(xs, agent_ys, strict=True), command)
    twin = simulate_round(NumpyNet(plan), theta_g, xs, ys, command)
    _, idx_a, val_a = codec.decode(agent.payload)
    _, idx_b, val_b = codec.decode(twin.payload)
    assert list(idx_a) == list(idx_b)
    assert rel_err(val_a, val_b) < TOL
    assert agent.macs == twin.macs and agent.samples == twin.samples == 30
    assert agent.recon_loss == pytest.approx(twin.recon_loss, rel=TOL)
    sgd = run_round(
        Network(plan),
        array("f", params),
        zip(xs, agent_ys, strict=True),
        dict(command, head_init="sgd"),
    )
    assert bytes(sgd.payload) != bytes(agent.payload)


def test_a_round_reuses_its_scratch_for_the_head():
    """Statistics live in the Δ buffer when they fit (omniglot's prototypes do), else in one
    buffer allocated at the first fit and kept (sine's ridge regression)."""
    net = Network(Plan(spec_for("omniglot")))
    assert net.head_scratch(heads.scratch_size(net.plan)) is net.delta
    small = Network(Plan(spec_for("sine")))
    size = heads.scratch_size(small.plan)
    assert size > len(small.delta)
    first = small.head_scratch(size)
    assert small.head_scratch(size) is first and len(first) >= size


@pytest.mark.parametrize(
    "field, value",
    [
        ("head_init", "prototype"),
        ("head_init", 1),
        ("head_ridge", 0),
        ("head_ridge", -1.0),
        ("head_ridge", True),
        ("head_ridge", "1"),
        ("head_ridge", limits.MAX_HEAD_RIDGE * 2),
        ("head_ridge", math.nan),
        ("head_ridge", math.inf),
    ],
)
def test_head_settings_out_of_range_are_refused(field, value):
    with pytest.raises(validate.Refused) as info:
        validate.check_settings({"round": 0, "version": 0, field: value})
    assert info.value.reason == reasons.BAD_SETTING and field in info.value.detail


def test_head_settings_in_range_are_accepted():
    for init in HEAD_INITS:
        validate.check_settings({"round": 0, "version": 0, "head_init": init, "head_ridge": 2.5})


def test_new_devices_fit_the_head_in_closed_form_on_the_head_samples():
    """The few-shot rule with head_init closed_form: the head-only part of the pass becomes
    the closed-form fit on the same samples, then the full steps run as before."""
    plan, params = fresh_params(spec_for("sine"), seed=7)
    net = NumpyNet(plan)
    theta = np.array(params[: plan.n_global])
    rng = np.random.default_rng(2)
    xs = rng.uniform(-1, 1, (10, 1)).astype(np.float32)
    ys = (np.sin(3 * xs)).astype(np.float32)
    s = dict(settings_for("sine"), head_init="closed_form", head_ridge=0.5, eval_head_epochs=0.3)
    only_head = fewshot.adapt(net, theta, True, xs, ys, s, head_only=True)
    perm = np.random.default_rng(fewshot.NEW_DEVICE_SEED).permutation(10)[:3]
    want = full_params(plan, theta)
    fit_head(net, want, xs[perm], ys[perm], 0.5)
    assert np.array_equal(only_head, want)
    full = fewshot.adapt(net, theta, True, xs, ys, s)
    assert np.any(full[: plan.n_global] != theta)
    assert not np.array_equal(full, only_head)
    sgd = fewshot.adapt(net, theta, True, xs, ys, dict(s, head_init="sgd"), head_only=True)
    assert not np.array_equal(sgd[plan.n_global :], only_head[plan.n_global :])


def test_the_service_sends_the_head_fields_only_for_a_closed_form_head():
    s = settings_for("occupancy")
    sent = wire_command(TinyMetaFed(s).round_command(1, 1))
    assert s["head_init"] == "sgd" and "head_init" not in sent and "head_ridge" not in sent
    closed = TinyMetaFed(dict(s, head_init="closed_form", head_ridge=2.0))
    command = wire_command(closed.round_command(1, 1))
    assert command["head_init"] == "closed_form" and command["head_ridge"] == 2.0
    validate.check_settings(command)
