"""`tinymetafed export` and `tinymetafed init`: models out to ONNX and in from ONNX.

export writes a checkpoint's meta-initialisation (optionally with a head fitted on support
samples) for other runtimes; init turns an ONNX graph of supported layers into a model spec
and a round-0 checkpoint the service can start from. The onnx package is imported only when
one of them runs, so `tinymetafed --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from broker_service.core.hyperparams import settings_for
from broker_service.core.nn import NumpyNet
from broker_service.server import checkpoint
from broker_service.server.config import ConfigError
from broker_service.tools.onnx_io import OnnxError

from .common import Subcommands, add_command


def add_export(sub: Subcommands) -> None:
    """The parser of `tinymetafed export`."""
    p = add_command(sub, "export", cmd_export, "write a checkpoint's model as ONNX")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="model.onnx")
    p.add_argument(
        "--with-head-from",
        metavar="SUPPORT_FILE",
        help="fit the local head on these support samples (sample-file format)",
    )


def cmd_export(args: argparse.Namespace) -> int:
    """Write a checkpoint's meta-initialisation (and optionally a fitted head) as ONNX."""
    import onnx

    from broker_service.tools.onnx_io import export_model

    ckpt = checkpoint.load(args.checkpoint)
    net = NumpyNet(ckpt.spec)
    head = "zeros (re-created on each device)"
    theta = np.zeros(net.plan.n_params, dtype=np.float32)
    theta[: len(ckpt.theta)] = ckpt.theta
    if args.with_head_from:
        theta, head = _fitted_head(args.with_head_from, ckpt, net)
    meta = {
        "use_case": ckpt.use_case,
        "algorithm": ckpt.algorithm,
        "round": ckpt.round,
        "preprocessing": ckpt.extra.get("preprocessing", {}),
        "head": head,
    }
    onnx.save(export_model(ckpt.spec, theta, meta), args.out)
    print("wrote %s (%s, round %d, head %s)" % (args.out, ckpt.use_case, ckpt.round, head))
    return 0


def _fitted_head(path: str, ckpt: checkpoint.Checkpoint, net: NumpyNet) -> tuple[np.ndarray, str]:
    """The parameters with the local head adapted on a support file, and how it was made."""
    from broker_service.core.fewshot import adapt
    from broker_service.sim.datafiles import read_sample_file

    try:
        xs, ys = read_sample_file(path, net.plan)
    except ValueError as exc:
        raise ConfigError("--with-head-from %s: %s" % (path, exc)) from None
    settings = {**settings_for(ckpt.use_case), **ckpt.settings}
    theta = adapt(net, ckpt.theta, ckpt.split, xs, ys, settings, head_only=True)
    return theta, "reconstructed on %d support samples" % len(xs)


def add_init(sub: Subcommands) -> None:
    """The parser of `tinymetafed init`."""
    p = add_command(sub, "init", cmd_init, "a model spec and initial weights from an ONNX graph")
    p.add_argument("--from-onnx", required=True, metavar="ARCH.onnx")
    p.add_argument("--out", default="init.ckpt.json")
    p.add_argument("--use-case", help="the use case this model is for (informational)")


def cmd_init(args: argparse.Namespace) -> int:
    """Turn an ONNX graph of supported layers into a model spec and initial checkpoint."""
    from broker_service.tools.onnx_io import import_model

    spec, theta = import_model(_load_onnx(args.from_onnx))
    ckpt = checkpoint.Checkpoint(
        spec=spec,
        theta=theta,
        round=0,
        algorithm="init",
        use_case=args.use_case or "custom",
        split=False,
    )
    checkpoint.save(args.out, ckpt)
    print(json.dumps(spec, indent=1))
    print("wrote %s (%d parameters)" % (args.out, len(theta)))
    return 0


def _load_onnx(path: str) -> Any:
    """An ONNX model from a file; an OnnxError when the file is not one."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(path)
    except DecodeError as exc:
        raise OnnxError("%s is not an ONNX model: %s" % (path, exc)) from None
