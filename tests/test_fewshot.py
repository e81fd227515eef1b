"""Few-shot evaluation on new devices: the adaptation rule, its parity with the device round's
reconstruction, the metrics and the confidence interval."""

from __future__ import annotations

from array import array

import numpy as np
import pytest

from broker_service.core.device_round import full_params, reconstruct_steps, sgd_steps
from broker_service.core.episode import Episode
from broker_service.core.fewshot import (
    NEW_DEVICE_SEED,
    adapt,
    ci95,
    classification_metrics,
    metric_value,
    protocol_settings,
    summarise_units,
    unit_metrics,
)
from broker_service.core.nn import NumpyNet
from broker_service.usecases.sine import SPEC as SINE_SPEC
from device_agent.network import Network
from device_agent.round import init_local, reconstruct_local, round_settings
from tests.helpers import fresh_params, rel_err

SETTINGS = {
    "eval_epochs": 3,
    "eval_head_epochs": 2,
    "recon_lr": 0.05,
    "adapt_lr": 0.02,
    "local_init": "zeros",
}


def _support(n: int = 8, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    return xs, (2.0 * np.sin(5 * xs + 1.0)).astype(np.float32)


def _theta(split: bool) -> tuple[NumpyNet, np.ndarray]:
    plan, params = fresh_params(SINE_SPEC, seed=11)
    theta = np.array(params, dtype=np.float32)
    return NumpyNet(plan), theta[: plan.n_global] if split else theta


def test_head_only_leaves_theta_g_unchanged_and_fits_the_head():
    net, theta_g = _theta(split=True)
    xs, ys = _support()
    params = adapt(net, theta_g, True, xs, ys, SETTINGS, head_only=True)
    n_g = net.plan.n_global
    np.testing.assert_array_equal(params[:n_g], theta_g)
    assert np.abs(params[n_g:]).max() > 1e-3  # θ_l drawn as zeros, then trained


def test_split_on_trains_theta_g_in_the_later_passes():
    net, theta_g = _theta(split=True)
    xs, ys = _support()
    params = adapt(net, theta_g, True, xs, ys, SETTINGS)
    assert np.abs(params[: net.plan.n_global] - theta_g).max() > 1e-4


def test_split_off_trains_every_layer_from_the_received_theta():
    net, theta = _theta(split=False)
    xs, ys = _support()
    params = adapt(net, theta, False, xs, ys, SETTINGS)
    for i in net.plan.param_layers:
        layer = net.plan.layers[i]
        block = slice(layer.w_off, layer.w_off + layer.n_params)
        assert np.abs(params[block] - theta[block]).max() > 1e-5, i
    # no head-only passes without a split: head_only changes nothing
    np.testing.assert_array_equal(adapt(net, theta, False, xs, ys, SETTINGS, head_only=True), theta)


def test_full_passes_step_the_head_at_recon_lr_and_the_rest_at_adapt_lr():
    net, theta = _theta(split=False)
    xs, ys = _support()
    lo_head = net.plan.layers[net.plan.local_layers[0]].w_off
    frozen_body = adapt(net, theta, False, xs, ys, dict(SETTINGS, adapt_lr=0.0))
    np.testing.assert_array_equal(frozen_body[:lo_head], theta[:lo_head])
    assert np.abs(frozen_body[lo_head:] - theta[lo_head:]).max() > 1e-4
    frozen_head = adapt(net, theta, False, xs, ys, dict(SETTINGS, recon_lr=0.0))
    np.testing.assert_array_equal(frozen_head[lo_head:], theta[lo_head:])
    assert np.abs(frozen_head[:lo_head] - theta[:lo_head]).max() > 1e-5


def test_head_only_pass_equals_the_device_rounds_reconstruction_on_the_same_samples():
    """One head-only pass = a round's step a (fresh θ_l, head-only steps) on the support set in
    the pass's order: exactly the numpy twin's, and the agent's to float32 tolerance."""
    net, theta_g = _theta(split=True)
    xs, ys = _support()
    settings = dict(SETTINGS, eval_epochs=1, eval_head_epochs=1)
    evaluated = adapt(net, theta_g, True, xs, ys, settings, head_only=True)

    perm = np.random.default_rng(NEW_DEVICE_SEED).permutation(len(xs))
    twin = full_params(net.plan, theta_g)
    init_local(net.plan, twin, NEW_DEVICE_SEED, "zeros")
    reconstruct_steps(net, twin, xs[perm], ys[perm], settings["recon_lr"])
    np.testing.assert_array_equal(evaluated, twin)

    agent = array("f", full_params(net.plan, theta_g).tolist())
    agent[net.plan.n_global :] = array("f", [7.0] * net.plan.n_local())  # redrawn by the round
    command = round_settings({"seed": NEW_DEVICE_SEED, "recon_lr": settings["recon_lr"]})
    samples = zip(xs[perm], [list(y) for y in ys[perm]], strict=True)
    reconstruct_local(Network(net.plan), agent, samples, command, len(xs))
    assert rel_err(agent, evaluated) < 1e-5


def test_head_passes_are_capped_by_the_passes():
    net, theta_g = _theta(split=True)
    xs, ys = _support()
    capped = adapt(net, theta_g, True, xs, ys, dict(SETTINGS, eval_epochs=1, eval_head_epochs=5))
    np.testing.assert_array_equal(capped[: net.plan.n_global], theta_g)


def test_metric_values():
    out = np.array([[1.0], [3.0]])
    assert metric_value("mse", out, np.array([2.0, 1.0])) == pytest.approx((1 + 4) / 2)
    logits = np.array([[0.1, 2.0, 0.0], [3.0, 0.0, 1.0], [0.0, 0.0, 5.0]])
    assert metric_value("accuracy", logits, np.array([1, 0, 1])) == pytest.approx(2 / 3)


def test_ci95_is_the_normal_half_width_of_the_mean():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    expected = 1.96 * np.sqrt(((values - 2.5) ** 2).sum() / 3) / 2
    assert ci95(values) == pytest.approx(expected)
    assert ci95(np.array([5.0])) == 0.0 and ci95(np.array([])) == 0.0
    assert ci95(np.full(10, 0.3)) == pytest.approx(0.0)


def test_a_fractional_head_pass_is_the_first_steps_of_one_online_pass():
    """eval_head_epochs = 0.5 with one pass: head-only steps on the first half of the shuffled
    support set, then full steps on the rest, each sample used once."""
    net, theta_g = _theta(split=True)
    xs, ys = _support(8)
    settings = dict(SETTINGS, eval_epochs=1, eval_head_epochs=0.5)
    got = adapt(net, theta_g, True, xs, ys, settings)
    perm = np.random.default_rng(NEW_DEVICE_SEED).permutation(8)
    want = full_params(net.plan, theta_g)
    init_local(net.plan, want, NEW_DEVICE_SEED, "zeros")
    reconstruct_steps(net, want, xs[perm[:4]], ys[perm[:4]], settings["recon_lr"])
    sgd_steps(net, want, xs[perm[4:]], ys[perm[4:]], 0.02, 0, head_lr=settings["recon_lr"])
    np.testing.assert_array_equal(got, want)
    head_only = adapt(net, theta_g, True, xs, ys, settings, head_only=True)
    np.testing.assert_array_equal(head_only[: net.plan.n_global], theta_g)
    assert not np.array_equal(head_only, got)


def test_multipass_protocol_swaps_in_the_multi_pass_counts():
    s = dict(SETTINGS, eval_epochs=1, eval_head_epochs=0.5)
    assert protocol_settings(s, "online", (4, 2)) is s
    multi = protocol_settings(s, "multipass", (4, 2))
    assert (multi["eval_epochs"], multi["eval_head_epochs"]) == (4, 2)
    with pytest.raises(ValueError):
        protocol_settings(s, "batch", (4, 2))


def test_classification_metrics_by_hand():
    labels = np.array([0, 0, 0, 1, 1])
    predicted = np.array([0, 0, 1, 1, 0])
    m = classification_metrics(labels, predicted)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["f1"] == pytest.approx(2 * 1 / (2 * 1 + 2))
    empty_day = classification_metrics(np.zeros(4, int), np.zeros(4, int))
    assert empty_day == {"accuracy": 1.0, "balanced_accuracy": 1.0, "f1": None}
    false_alarm = classification_metrics(np.zeros(2, int), np.array([1, 0]))
    assert false_alarm["f1"] is None and false_alarm["balanced_accuracy"] == 0.5
    assert classification_metrics(np.array([1, 0]), np.array([0, 0]))["f1"] == 0.0
    assert "f1" not in classification_metrics(np.array([0, 2]), np.array([0, 2]))


def test_metrics_pool_per_unit_and_ci_is_over_units():
    def episode(unit, labels):
        return Episode("d", np.zeros((1, 1)), np.zeros(1), np.zeros((len(labels), 1)), labels, unit)

    episodes = [
        episode("mon", np.array([1, 1])),
        episode("mon", np.array([0, 0])),
        episode("sun", np.array([0, 0])),
    ]
    right = np.array([[0.0, 1.0], [0.0, 1.0]])
    wrong = np.array([[0.0, 1.0], [0.0, 1.0]])
    per_unit = unit_metrics("accuracy", episodes, [right, wrong, right[:, ::-1]])
    assert list(per_unit) == ["mon", "sun"]
    assert per_unit["mon"]["accuracy"] == 0.5 and per_unit["mon"]["f1"] == pytest.approx(2 / 3)
    assert per_unit["sun"] == {"accuracy": 1.0, "balanced_accuracy": 1.0, "f1": None}
    summary = summarise_units(per_unit, "accuracy")
    assert summary["units"] == 2 and summary["mean"] == pytest.approx(0.75)
    assert summary["ci95"] == pytest.approx(ci95(np.array([0.5, 1.0])))
    assert summary["f1"] == pytest.approx(2 / 3) and summary["f1_units"] == 1
    mse = unit_metrics("mse", episodes[:2], [np.zeros((2, 1)), np.zeros((2, 1))])
    assert mse == {"mon": {"mse": pytest.approx(0.5)}}
