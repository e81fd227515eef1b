"""Finite-difference gradient checks of every layer type and both losses (numpy, float64)."""

import numpy as np
import pytest

from broker_service.core.nn import NumpyNet
from tests.helpers import LAYER_SPECS, fresh_params, sample


@pytest.mark.parametrize("name", sorted(LAYER_SPECS))
def test_backward_matches_finite_differences(name):
    spec = LAYER_SPECS[name]
    plan, p32 = fresh_params(spec, seed=3)
    net = NumpyNet(plan, dtype=np.float64)
    params = np.array(p32, dtype=np.float64)
    params[plan.layers[plan.param_layers[-1]].b_off :] += 0.1  # non-zero biases too
    rng = np.random.default_rng(5)
    xs, ys = zip(*[sample(plan, rng) for _ in range(3)], strict=True)
    x = np.stack(xs)
    y = np.array(ys)
    _, grad = net.gradient(params, x, y)
    eps = 1e-6
    numeric = np.zeros_like(params)
    for i in range(len(params)):
        hi = params.copy()
        lo = params.copy()
        hi[i] += eps
        lo[i] -= eps
        numeric[i] = (net.gradient(hi, x, y)[0] - net.gradient(lo, x, y)[0]) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-7)


def test_gradient_through_a_strided_conv_input_matches_finite_differences():
    spec = {
        "input": [2, 6, 5],
        "loss": "mse",
        "local_layers": 1,
        "layers": [
            {"type": "conv2d", "filters": 2, "kernel": 3, "stride": 2},
            {"type": "tanh"},
            {"type": "conv2d", "filters": 2, "kernel": 1},
        ],
    }
    plan, p32 = fresh_params(spec, seed=4)
    net = NumpyNet(plan, dtype=np.float64)
    params = np.array(p32, dtype=np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 6, 5))
    y = rng.standard_normal((2, plan.output_size))
    _, grad = net.gradient(params, x, y)
    first_layer = plan.layers[0]
    i = first_layer.w_off + 3
    hi = params.copy()
    lo = params.copy()
    hi[i] += 1e-6
    lo[i] -= 1e-6
    numeric = (net.gradient(hi, x, y)[0] - net.gradient(lo, x, y)[0]) / 2e-6
    assert grad[i] == pytest.approx(numeric, rel=1e-5)


def test_gradient_stops_below_first_layer():
    plan, p32 = fresh_params(LAYER_SPECS["relu"])
    net = NumpyNet(plan, dtype=np.float64)
    x, y = sample(plan, np.random.default_rng(0))
    _, grad = net.gradient(np.array(p32, dtype=np.float64), x[None], np.array([y]), first=2)
    assert not grad[: plan.layers[2].w_off].any()
    assert grad[plan.layers[2].w_off :].any()
