"""ONNX export of a meta-initialisation and import of ONNX graphs built from supported layers.

Export writes the model as plain operators (Conv, MaxPool, AveragePool, Relu, Tanh, Flatten,
Gemm) with the parameters as initialisers `layer<i>.weight` / `layer<i>.bias`, and metadata:
use case, round, algorithm, the model spec, which parameters are local (θ_l) and the input
preprocessing. Import reads such a graph back into a spec and its weights; any other operator is
an error naming it and its node.
"""

from __future__ import annotations

import json

import numpy as np

from device_agent.model import Plan

OPSET = 17
SUPPORTED = ("Conv", "MaxPool", "AveragePool", "Relu", "Tanh", "Flatten", "Gemm")


class OnnxError(ValueError):
    """A graph that cannot be imported; the message names the operator and the node."""


def _weights(plan: Plan, theta: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    layer = plan.layers[i]
    n_w = layer.n_params - layer.out_shape[0]
    w = theta[layer.w_off : layer.w_off + n_w]
    b = theta[layer.b_off : layer.b_off + layer.out_shape[0]]
    if layer.kind == "dense":
        return w.reshape(layer.out_shape[0], layer.size_in()), b
    return w.reshape(layer.out_shape[0], layer.in_shape[0], layer.kh, layer.kw), b


def export_model(spec: dict, theta: np.ndarray, metadata: dict | None = None):
    """An onnx.ModelProto computing the spec's network with parameters `theta` (all of them)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    plan = Plan(spec)
    theta = np.asarray(theta, dtype=np.float32)
    if len(theta) != plan.n_params:
        raise ValueError("theta has %d values, the model %d" % (len(theta), plan.n_params))
    vector_in = plan.input_shape[1:] == (1, 1) and plan.layers[0].kind == "dense"
    in_dims = [plan.input_shape[0]] if vector_in else list(plan.input_shape)
    nodes, inits = [], []
    current, flat = "x", vector_in
    for i, layer in enumerate(plan.layers):
        out = "t%d" % i
        kind = layer.kind
        if kind in ("dense", "conv2d"):
            w, b = _weights(plan, theta, i)
            inits += [
                numpy_helper.from_array(w, "layer%d.weight" % i),
                numpy_helper.from_array(b, "layer%d.bias" % i),
            ]
        if kind == "dense":
            if not flat:
                nodes.append(helper.make_node("Flatten", [current], [out + "_flat"], axis=1))
                current, flat = out + "_flat", True
            nodes.append(
                helper.make_node(
                    "Gemm",
                    [current, "layer%d.weight" % i, "layer%d.bias" % i],
                    [out],
                    transB=1,
                    name="layer%d" % i,
                )
            )
        elif kind == "conv2d":
            nodes.append(
                helper.make_node(
                    "Conv",
                    [current, "layer%d.weight" % i, "layer%d.bias" % i],
                    [out],
                    kernel_shape=[layer.kh, layer.kw],
                    strides=[layer.sh, layer.sw],
                    name="layer%d" % i,
                )
            )
        elif kind in ("maxpool", "avgpool"):
            op = "MaxPool" if kind == "maxpool" else "AveragePool"
            nodes.append(
                helper.make_node(
                    op,
                    [current],
                    [out],
                    kernel_shape=[layer.kh, layer.kw],
                    strides=[layer.sh, layer.sw],
                    name="layer%d" % i,
                )
            )
        elif kind == "flatten":
            nodes.append(helper.make_node("Flatten", [current], [out], axis=1, name="layer%d" % i))
            flat = True
        else:
            nodes.append(helper.make_node(kind.capitalize(), [current], [out], name="layer%d" % i))
        current = out
    nodes.append(helper.make_node("Identity", [current], ["y"], name="output"))
    graph = helper.make_graph(
        nodes,
        "tinymetafed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_dims])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", plan.output_size])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tinymetafed"
    )
    model.ir_version = 8
    meta = {
        "spec": json.dumps(spec),
        "local_parameters": json.dumps(
            ["layer%d.weight" % i for i in plan.local_layers]
            + ["layer%d.bias" % i for i in plan.local_layers]
        ),
    }
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def import_model(model) -> tuple[dict, np.ndarray]:
    """(spec, theta) of a graph made of supported operators, in node order."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in graph.initializer}
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]]
    if any(d <= 0 for d in dims) or len(dims) not in (1, 3):
        raise OnnxError(
            "input %r must have static shape [N, n] or [N, C, H, W], got %s"
            % (graph.input[0].name, dims)
        )
    layers, blocks = [], []
    for node in graph.node:
        _import_node(node, inits, layers, blocks)
    props = {p.key: p.value for p in model.metadata_props}
    spec = {
        "input": dims,
        "layers": layers,
        "loss": json.loads(props["spec"]).get("loss", "mse") if "spec" in props else "mse",
        "local_layers": 1,
    }
    if "spec" in props:
        original = json.loads(props["spec"])
        for key in ("loss", "local_layers", "grad_clip"):
            if key in original:
                spec[key] = original[key]
    theta = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    plan = Plan(spec)
    if len(theta) != plan.n_params:
        raise OnnxError("weights hold %d values, the layers need %d" % (len(theta), plan.n_params))
    return spec, theta.astype(np.float32)


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _import_node(node, inits, layers, blocks) -> None:
    op, where = node.op_type, "node %r (%s)" % (node.name or node.output[0], node.op_type)
    if op == "Identity":
        return
    if op not in SUPPORTED:
        raise OnnxError(
            "unsupported operator %s at %s; supported: %s" % (op, where, ", ".join(SUPPORTED))
        )
    if op == "Conv":
        if (
            any(_attr(node, "pads", [0, 0, 0, 0]))
            or _attr(node, "group", 1) != 1
            or any(d != 1 for d in _attr(node, "dilations", [1, 1]))
        ):
            raise OnnxError("%s: only valid padding, group 1 and dilation 1 are supported" % where)
        w, b = inits[node.input[1]], inits[node.input[2]]
        layers.append(
            {
                "type": "conv2d",
                "filters": int(w.shape[0]),
                "kernel": [int(w.shape[2]), int(w.shape[3])],
                "stride": [int(s) for s in _attr(node, "strides", [1, 1])],
            }
        )
        blocks += [w.reshape(-1), b.reshape(-1)]
    elif op in ("MaxPool", "AveragePool"):
        kernel = [int(k) for k in _attr(node, "kernel_shape")]
        if [int(s) for s in _attr(node, "strides", kernel)] != kernel or any(
            _attr(node, "pads", [0, 0, 0, 0])
        ):
            raise OnnxError(
                "%s: only non-overlapping pooling (stride = size) without padding" % where
            )
        layers.append({"type": "maxpool" if op == "MaxPool" else "avgpool", "size": kernel})
    elif op in ("Relu", "Tanh"):
        layers.append({"type": op.lower()})
    elif op == "Flatten":
        if _attr(node, "axis", 1) != 1:
            raise OnnxError("%s: only axis=1 is supported" % where)
        if layers and layers[-1]["type"] != "flatten":
            layers.append({"type": "flatten"})
    else:
        w = inits[node.input[1]]
        b = (
            inits[node.input[2]]
            if len(node.input) > 2
            else np.zeros(w.shape[0 if _attr(node, "transB", 0) else 1], dtype=np.float32)
        )
        if not _attr(node, "transB", 0):
            w = w.T
        if (
            _attr(node, "transA", 0)
            or _attr(node, "alpha", 1.0) != 1.0
            or _attr(node, "beta", 1.0) != 1.0
        ):
            raise OnnxError("%s: only Gemm with alpha = beta = 1 and no transA" % where)
        layers.append({"type": "dense", "units": int(w.shape[0])})
        blocks += [np.ascontiguousarray(w).reshape(-1), b.reshape(-1)]
