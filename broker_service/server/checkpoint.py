"""Checkpoints: model spec, θ_g, round and settings in one JSON file, written atomically.

The service resumes from it and `tinymetafed evaluate` / `export` read it. θ_g is stored as
base64 little-endian float32 with its CRC-32, so a damaged file is detected, never half-loaded;
a θ_g with a non-finite entry is refused on load (no device could use it), so a poisoned model
cannot be resumed and served again.
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


def save(path: str | Path, ckpt: Checkpoint) -> None:
    """Write the checkpoint atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = np.asarray(ckpt.theta, dtype="<f4").tobytes()
    doc = {
        "format": FORMAT,
        "use_case": ckpt.use_case,
        "algorithm": ckpt.algorithm,
        "round": ckpt.round,
        "split": ckpt.split,
        "spec": ckpt.spec,
        "settings": ckpt.settings,
        "theta_len": len(ckpt.theta),
        "theta_crc32": zlib.crc32(raw),
        "theta_f32_b64": base64.b64encode(raw).decode(),
        "extra": ckpt.extra,
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
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
    try:
        raw = base64.b64decode(doc["theta_f32_b64"], validate=True)
    except (KeyError, ValueError):
        raise CheckpointError("%s: theta is missing or not base64" % path) from None
    if len(raw) != 4 * int(doc["theta_len"]) or zlib.crc32(raw) != doc["theta_crc32"]:
        raise CheckpointError("%s: theta is damaged (length or CRC mismatch)" % path)
    theta = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(theta)):
        raise CheckpointError("%s: theta has non-finite entries" % path)
    return Checkpoint(
        spec=doc["spec"],
        theta=theta,
        round=int(doc["round"]),
        algorithm=doc["algorithm"],
        use_case=doc["use_case"],
        settings=doc.get("settings", {}),
        split=bool(doc.get("split", True)),
        extra=doc.get("extra", {}),
    )
