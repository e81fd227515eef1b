"""ONNX: onnxruntime equals the numpy model for every default model; export/import round trips;
unsupported operators are named; the CLI exports a checkpoint with a head fitted on support."""

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from broker_service.core.initialisation import initial_theta
from broker_service.core.nn import NumpyNet
from broker_service.server import checkpoint
from broker_service.sim.datafiles import write_device_samples
from broker_service.tools.onnx_io import OnnxError, export_model, import_model
from broker_service.usecases.sine import SineUseCase
from device_agent.specs import spec_for
from tests.helpers import LAYER_SPECS
from tests.mqtt_helpers import ROOT


def run_onnx(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def batch_for(plan, rng, n=7):
    shape = (n, plan.input_shape[0]) if plan.input_shape[1:] == (1, 1) else (n, *plan.input_shape)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("use_case", ["sine", "omniglot", "kws", "occupancy"])
def test_onnxruntime_equals_numpy_for_default_models(use_case):
    net = NumpyNet(spec_for(use_case))
    theta = initial_theta(net, 3)
    theta += np.random.default_rng(1).normal(0, 0.05, theta.shape).astype(np.float32)
    x = batch_for(net.plan, np.random.default_rng(2))
    got = run_onnx(export_model(net.plan.spec, theta, {"use_case": use_case}), x)
    want = net.predict(theta, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["cnn", "avgpool", "relu", "tanh", "maxpool"])
def test_export_import_export_round_trips(name):
    spec = dict(LAYER_SPECS[name], local_layers=1)
    net = NumpyNet(spec)
    theta = initial_theta(net, 5)
    first = export_model(spec, theta)
    spec2, theta2 = import_model(first)
    np.testing.assert_array_equal(theta2, theta)
    second = export_model(spec2, theta2)
    assert [n.op_type for n in first.graph.node] == [n.op_type for n in second.graph.node]
    for a, b in zip(first.graph.initializer, second.graph.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
    x = batch_for(net.plan, np.random.default_rng(0))
    np.testing.assert_allclose(NumpyNet(spec2).predict(theta2, x), net.predict(theta, x), rtol=1e-6)


def test_metadata_names_the_local_parameters():
    net = NumpyNet(spec_for("omniglot"))
    model = export_model(net.plan.spec, initial_theta(net, 1), {"round": 7})
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["local_parameters"]) == ["layer6.weight", "layer6.bias"]
    assert json.loads(props["spec"]) == net.plan.spec and props["round"] == "7"


def test_unsupported_operator_is_named_with_its_node():
    w = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
            helper.make_node("Sigmoid", ["h"], ["y"], name="squash"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [w],
    )
    with pytest.raises(OnnxError, match="unsupported operator MatMul at node 'mm'"):
        import_model(helper.make_model(graph))


def test_cli_exports_with_a_fitted_head_and_imports(tmp_path):
    use_case = SineUseCase()
    net = NumpyNet(use_case.spec)
    theta_g = initial_theta(net, 0)[: net.plan.n_global]
    ckpt = checkpoint.Checkpoint(
        spec=use_case.spec, theta=theta_g, round=3, algorithm="tinymetafed", use_case="sine"
    )
    checkpoint.save(tmp_path / "c.json", ckpt)
    support = write_device_samples(use_case, use_case.device_ids[0], tmp_path / "s.csv", 0, 10)
    out = tmp_path / "m.onnx"
    cli = [sys.executable, "-m", "broker_service.cli"]
    subprocess.run(
        cli
        + [
            "export",
            "--checkpoint",
            str(tmp_path / "c.json"),
            "--out",
            str(out),
            "--with-head-from",
            support,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    model = onnx.load(out)
    props = {p.key: p.value for p in model.metadata_props}
    assert "reconstructed on 10 support samples" in props["head"]
    head = numpy_helper.to_array(
        next(t for t in model.graph.initializer if t.name == "layer4.weight")
    )
    assert np.abs(head).sum() > 0  # fitted, not the zero init
    proc = subprocess.run(
        cli + ["init", "--from-onnx", str(out), "--out", str(tmp_path / "i.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert checkpoint.load(tmp_path / "i.json").spec["layers"] == use_case.spec["layers"]
    assert '"dense"' in proc.stdout


def test_a_new_session_starts_from_an_imported_architecture(tmp_path):
    from broker_service.observe.logs import EventLog
    from broker_service.server.config import ConfigError, ServiceConfig
    from broker_service.server.service import AggregationService

    net = NumpyNet(spec_for("sine"))
    theta = initial_theta(net, 42)
    onnx.save(export_model(net.plan.spec, theta), tmp_path / "arch.onnx")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "broker_service.cli",
            "init",
            "--from-onnx",
            str(tmp_path / "arch.onnx"),
            "--out",
            str(tmp_path / "init.json"),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    cfg = ServiceConfig(
        use_case="sine",
        state_dir=str(tmp_path / "state"),
        init_checkpoint=str(tmp_path / "init.json"),
        eval_devices=1,
    )
    service = AggregationService(cfg, EventLog(quiet=True))
    np.testing.assert_array_equal(service.theta, theta[: net.plan.n_global])
    occupancy = NumpyNet(spec_for("occupancy"))
    checkpoint.save(
        tmp_path / "other.json",
        checkpoint.Checkpoint(
            spec=occupancy.plan.spec,
            theta=initial_theta(occupancy, 1),
            round=0,
            algorithm="init",
            use_case="custom",
        ),
    )
    cfg.init_checkpoint = str(tmp_path / "other.json")
    cfg.state_dir = str(tmp_path / "state2")
    with pytest.raises(ConfigError, match="another architecture"):
        AggregationService(cfg, EventLog(quiet=True))
