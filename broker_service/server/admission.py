"""Update admission: the checks an update passes before it counts in the open round.

In order: the HMAC signature when updates are signed (`hmac_keys_file`), the round's own checks,
the norm bound and the sample clamp (`RoundLedger.offer`, with the bound of
`core.bounds.InfluenceBounds`), then the journal, so that an accepted update survives a crash.
Every refusal is recorded in the round's ledger here; the service only logs the outcome.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path

import numpy as np

from broker_service.core.bounds import InfluenceBounds
from broker_service.server.config import ConfigError
from broker_service.server.journal import Journal
from broker_service.server.rounds import Accepted, Rejected, RoundLedger
from device_agent import reasons
from device_agent.auth import hmac_sha256, split_signed


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
    """Admits updates into a round; its `bounds` remember the norms of recent accepted updates
    and give the norm bound for the model in use (`theta`, set as each round opens)."""

    def __init__(
        self, hmac_keys: dict[str, bytes] | None, bounds: InfluenceBounds | None = None
    ) -> None:
        self.hmac_keys = hmac_keys
        self.bounds = bounds if bounds is not None else InfluenceBounds()
        self.theta = np.zeros(0, dtype=np.float32)

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
            ledger.max_norm = self.bounds.norm_bound(self.theta)
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
        self.bounds.remember(accepted.update)
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
