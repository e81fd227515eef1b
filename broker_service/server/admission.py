"""Update admission: the checks an update passes before it counts in the open round.

In order: the HMAC signature when updates are signed (`hmac_keys_file`), the round's own checks
and the norm bound (`RoundLedger.offer`), then the journal, so that an accepted update survives a
crash. Every refusal is recorded in the round's ledger here; the service only logs the outcome.
"""

from __future__ import annotations

import hmac
import json
from collections import deque
from pathlib import Path

import numpy as np

from broker_service.server.config import ConfigError
from broker_service.server.journal import Journal
from broker_service.server.rounds import Accepted, Rejected, RoundLedger
from device_agent import reasons
from device_agent.auth import hmac_sha256, split_signed

RECENT_NORMS = 200
"""How many accepted update norms the adaptive bound looks back on."""
MIN_NORMS = 20
"""Accepted updates needed before the adaptive bound applies."""
NORM_FACTOR = 100.0
"""The adaptive bound as a multiple of the recent median norm."""


def load_hmac_keys(path: str | None) -> dict[str, bytes] | None:
    """{device id: key} from a JSON file of hex keys, or None when updates are not signed."""
    if not path:
        return None
    try:
        doc = json.loads(Path(path).read_text())
        return {str(device): bytes.fromhex(key) for device, key in doc.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError("hmac_keys_file %s: %s" % (path, type(exc).__name__)) from None


class Admission:
    """Admits updates into a round; remembers the norms of recent accepted updates."""

    def __init__(self, hmac_keys: dict[str, bytes] | None, max_update_norm: float = 0.0) -> None:
        self.hmac_keys = hmac_keys
        self.max_update_norm = max_update_norm
        self.norms: deque[float] = deque(maxlen=RECENT_NORMS)

    def admit(
        self, ledger: RoundLedger, journal: Journal, device: str, message: bytes
    ) -> Accepted | None:
        """The newly accepted update of `device`, or None for a duplicate.

        Raises Rejected when the update is refused (recorded with `ledger.reject`), and OSError
        when it could not be journaled (the acceptance is withdrawn and counted as a
        storage error; the device may send it again).
        """
        try:
            payload = self.authenticate(device, message)
            ledger.max_norm = self.norm_bound()
            accepted = ledger.offer(device, payload)
        except Rejected as exc:
            ledger.reject(device, exc.reason)
            raise
        if accepted is None:
            return None
        try:
            journal.append(device, payload)
        except OSError:
            ledger.withdraw(device, reasons.STORAGE_ERROR)
            raise
        self.norms.append(float(np.linalg.norm(accepted.update.values)))
        return accepted

    def authenticate(self, device: str, message: bytes) -> bytes:
        """The payload of a signed message from `device`; raises Rejected when it is not."""
        if self.hmac_keys is None:
            return message
        key = self.hmac_keys.get(device)
        if key is None:
            raise Rejected(reasons.UNKNOWN_DEVICE, device)
        payload, tag = split_signed(message)
        if payload is None or not hmac.compare_digest(hmac_sha256(key, payload), tag):
            raise Rejected(reasons.BAD_SIGNATURE, device)
        return payload

    def norm_bound(self) -> float:
        """The configured bound, or 100× the median norm of the last 200 accepted updates
        (once 20 are known; 0 means no bound): only absurd updates are refused here; robust
        aggregation (clip_scale) handles subtler ones."""
        if self.max_update_norm > 0:
            return self.max_update_norm
        if len(self.norms) < MIN_NORMS:
            return 0.0
        return NORM_FACTOR * float(np.median(self.norms))
