"""Model specs: shapes, parameter layout, the global/local split, MAC counts, clear errors."""

import pytest

from device_agent.model import Plan, SpecError
from tests.helpers import LAYER_SPECS


def test_cnn_plan_shapes_offsets_and_split():
    plan = Plan(LAYER_SPECS["cnn"])
    shapes = [layer.out_shape for layer in plan.layers]
    assert shapes[0] == (3, 8, 7) and shapes[2] == (3, 4, 3) and shapes[3] == (4, 3, 2)
    conv1, conv2, head = (plan.layers[i] for i in plan.param_layers)
    assert conv1.n_params == 3 * 9 + 3 and conv2.w_off == conv1.n_params
    assert head.n_params == 3 * 24 + 3
    assert plan.n_global == head.w_off and plan.n_local() == head.n_params
    assert plan.forward_macs() == 3 * 8 * 7 * 9 + 4 * 3 * 2 * 3 * 4 + 3 * 24


def test_train_step_macs_count_backprop_only_where_needed():
    plan = Plan(LAYER_SPECS["relu"])
    fwd = plan.forward_macs()
    a, b = (plan.layers[i].macs for i in plan.param_layers)
    assert plan.train_step_macs(2) == fwd + b  # head only: its weight gradient
    assert plan.train_step_macs(0) == fwd + a + 2 * b  # all: weights, plus head input gradient
    assert plan.train_step_macs(0, 1) == fwd + a + b  # head frozen but passes its gradient


def test_no_split_means_everything_is_global():
    spec = dict(LAYER_SPECS["relu"], local_layers=0)
    plan = Plan(spec)
    assert plan.n_global == plan.n_params and plan.local_layers == []


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"layers": []}, "missing 'input'"),
        ({"input": [3], "layers": []}, "no layers"),
        ({"input": [3], "layers": [{"type": "lstm"}]}, "unknown type"),
        (
            {"input": [3], "layers": [{"type": "dense", "units": 2}], "loss": "hinge"},
            "unknown loss",
        ),
        (
            {"input": [1, 2, 2], "layers": [{"type": "conv2d", "filters": 1, "kernel": 3}]},
            "larger than input",
        ),
        (
            {"input": [3], "layers": [{"type": "dense", "units": 2}], "local_layers": 2},
            "local_layers=2",
        ),
        ({"input": [1, 2], "layers": [{"type": "dense", "units": 2}]}, "input must be"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(SpecError, match=message):
        Plan(spec)
