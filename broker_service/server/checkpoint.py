"""Checkpoints: model spec, θ_g, round and settings in one JSON file, written atomically.

The service resumes from it and `tinymetafed evaluate` / `export` read it. θ_g is stored as
base64 little-endian float32 with its CRC-32, so a damaged file is detected, never half-loaded;
a θ_g with a non-finite entry is refused on load (no device could use it), so a poisoned model
cannot be resumed and served again. The server optimiser's state (`server_state`: its name, step
count and moment arrays, core/serveropt.py) is kept the same way, so a restart continues with the
same moments; a checkpoint without it (written before it existed) loads with an empty one.
A checkpoint whose settings name a removed setting (core.hyperparams.REMOVED) at its old default
loads without it; one that sets a removed setting (or value) otherwise is refused, naming it.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from broker_service.core.hyperparams import drop_removed

FORMAT = "tinymetafed-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged or of another format."""


@dataclass
class Checkpoint:
    """What a meta-training run needs to resume or to be evaluated."""

    spec: dict[str, Any]
    theta: np.ndarray
    round: int
    algorithm: str
    use_case: str
    settings: dict[str, Any] = field(default_factory=dict)
    split: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    server_state: dict[str, Any] = field(default_factory=dict)
    """Scalars as they are, numpy arrays stored as float32 with their CRC-32."""


def _encode_f32(values: np.ndarray) -> dict[str, Any]:
    """A float32 array as {"len", "crc32", "f32_b64"} (little-endian, base64)."""
    raw = np.asarray(values, dtype="<f4").tobytes()
    return {"len": len(values), "crc32": zlib.crc32(raw), "f32_b64": base64.b64encode(raw).decode()}


def _decode_f32(text: Any, length: Any, crc: Any, path: str | Path, what: str) -> np.ndarray:
    """The float32 array `_encode_f32` stored; CheckpointError when it is missing, damaged or
    not finite."""
    try:
        raw = base64.b64decode(text, validate=True)
        expected = 4 * int(length)
    except (TypeError, ValueError):
        raise CheckpointError("%s: %s is missing or not base64" % (path, what)) from None
    if len(raw) != expected or zlib.crc32(raw) != crc:
        raise CheckpointError("%s: %s is damaged (length or CRC mismatch)" % (path, what))
    values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise CheckpointError("%s: %s has non-finite entries" % (path, what))
    return values


def _encode_state(state: dict[str, Any]) -> dict[str, Any]:
    return {
        k: {"array": _encode_f32(v)} if isinstance(v, np.ndarray) else v for k, v in state.items()
    }


def _decode_state(doc: Any, path: str | Path) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise CheckpointError("%s: server_state is not a table" % path)
    out = {}
    for key, value in doc.items():
        if isinstance(value, dict) and isinstance(value.get("array"), dict):
            a = value["array"]
            what = "server_state %s" % key
            out[key] = _decode_f32(a.get("f32_b64"), a.get("len"), a.get("crc32"), path, what)
        else:
            out[key] = value
    return out


def save(path: str | Path, ckpt: Checkpoint) -> None:
    """Write the checkpoint atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    theta = _encode_f32(ckpt.theta)
    doc = {
        "format": FORMAT,
        "use_case": ckpt.use_case,
        "algorithm": ckpt.algorithm,
        "round": ckpt.round,
        "split": ckpt.split,
        "spec": ckpt.spec,
        "settings": ckpt.settings,
        "theta_len": theta["len"],
        "theta_crc32": theta["crc32"],
        "theta_f32_b64": theta["f32_b64"],
        "extra": ckpt.extra,
        "server_state": _encode_state(ckpt.server_state),
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc))  # one C-encoded string: json.dump encodes in Python
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_settings(settings: Any, path: str | Path) -> dict[str, Any]:
    """A checkpoint's saved settings without the removed ones left at their old defaults;
    CheckpointError naming a removed setting (or value) it sets otherwise."""
    if not isinstance(settings, dict):
        raise CheckpointError("checkpoint %s: settings are not a JSON object" % path)
    try:
        return drop_removed(settings)
    except ValueError as exc:
        raise CheckpointError("checkpoint %s uses %s" % (path, exc)) from None


def load(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint; raises CheckpointError saying what is wrong."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError("checkpoint %s does not exist" % path) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError("checkpoint %s is not readable JSON: %s" % (path, exc)) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError("%s is not a %s file" % (path, FORMAT))
    theta = _decode_f32(
        doc.get("theta_f32_b64"), doc.get("theta_len"), doc.get("theta_crc32"), path, "theta"
    )
    settings = current_settings(doc.get("settings", {}), path)
    return Checkpoint(
        spec=doc["spec"],
        theta=theta,
        round=int(doc["round"]),
        algorithm=doc["algorithm"],
        use_case=doc["use_case"],
        settings=settings,
        split=bool(doc.get("split", True)),
        extra=doc.get("extra", {}),
        server_state=_decode_state(doc.get("server_state", {}), path),
    )
