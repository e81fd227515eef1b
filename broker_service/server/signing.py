"""Downlink integrity: the service signs what devices act on.

A device with a key (`hmac_key`; the same key signs its updates, listed in the service's
`hmac_keys_file`) accepts a round command only with the service's HMAC-SHA256 tag under that key,
and trains only on a model whose SHA-256 is the one the command names. So the fleet's single
retained MODEL needs no signature of its own: each device's command vouches for it. A signed
command also carries the service's session `epoch`, so a device refuses a command (or a model)
older than the newest it verified, across service restarts too.

The epoch is the time the service started, in seconds, kept above the last one stored in
`<state_dir>/downlink.json`: a restarted or new session always orders after every earlier one.
Devices without a key get unsigned commands, as before (docs/security.md, "The device").
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from broker_service.server.admission import load_hmac_keys
from broker_service.server.config import ServiceConfig
from device_agent import codec, limits
from device_agent.auth import digest, sign
from device_agent.validate import DIGEST_KEY, EPOCH_KEY

EPOCH_FILE = "downlink.json"
"""The file in the state folder that remembers the last session epoch."""


def next_epoch(previous: int | None, now: float) -> int:
    """The new session's epoch: `now` in whole seconds, but always after `previous`."""
    epoch = int(now)
    if previous is not None and epoch <= previous:
        epoch = previous + 1
    if not 0 <= epoch <= limits.MAX_U32:
        raise ValueError("session epoch %d outside the 32-bit range" % epoch)
    return epoch


def session_epoch(state_dir: Path, now: float | None = None) -> int:
    """A new epoch for this service start, stored in the state folder (read back next time)."""
    path = state_dir / EPOCH_FILE
    previous = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # none stored yet
        previous = int(json.loads(path.read_text())["epoch"])
    epoch = next_epoch(previous, time.time() if now is None else now)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"epoch": epoch}) + "\n")
    tmp.replace(path)
    return epoch


class DownlinkSigner:
    """Builds each device's COMMAND payload: signed, with the epoch and the model's digest, for a
    device with a key; the plain command for the others (and for every device without keys)."""

    def __init__(self, keys: dict[str, bytes] | None, epoch: int) -> None:
        self.keys = keys or {}
        self.epoch = epoch
        self._model: bytes = b""
        self._digest = ""
        self._plain_key: tuple | None = None
        self._plain = b""

    def model_digest(self, model_payload: bytes) -> str:
        """The hex SHA-256 of a MODEL payload (kept for the last payload seen)."""
        if model_payload is not self._model:
            self._model = model_payload
            self._digest = digest(model_payload).hex()
        return self._digest

    def command(
        self, device: str, command: dict, version: int, round_no: int, model_payload: bytes
    ) -> bytes:
        """The COMMAND payload for `device`, followed by its tag when the device has a key."""
        key = self.keys.get(device)
        if key is None:  # the same bytes for every such device: encoded once a round
            plain = (json.dumps(command, sort_keys=True), version, round_no)
            if plain != self._plain_key:
                self._plain_key = plain
                self._plain = bytes(codec.encode_command(command, version, round_no))
            return self._plain
        signed = dict(command)
        signed[EPOCH_KEY] = self.epoch
        if not command.get("cancel"):
            signed[DIGEST_KEY] = self.model_digest(model_payload)
        return sign(key, codec.encode_command(signed, version, round_no))


def downlink_signer(cfg: ServiceConfig) -> DownlinkSigner:
    """The signer of a service: its devices' keys (`hmac_keys_file`) and a new session epoch.
    Without keys no epoch is stored: nothing is signed."""
    keys = load_hmac_keys(cfg.hmac_keys_file)
    if not keys:
        return DownlinkSigner(None, 0)
    return DownlinkSigner(keys, session_epoch(Path(cfg.state_dir)))
