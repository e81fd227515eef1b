"""Update admission: the checks an update passes before it counts in the open round.

In order: the HMAC signature when updates are signed (`hmac_keys_file`), the round's own checks,
the norm bound and the sample clamp (`RoundLedger.offer`, with the bound of
`core.bounds.InfluenceBounds`), then the journal, so that an accepted update survives a crash.
Every refusal is recorded in the round's ledger here; the service only logs the outcome.

`admit_many` admits the updates that arrived together: they are decoded in one batch
(`fastcodec.decode_many`), then each is checked in arrival order exactly as `admit` would (its
norm joins the bounds' history before the next one is checked), and the
accepted ones are journaled with one fsync (group commit) before `admit_many` returns. Until
then nothing reads the ledger (the service is one loop), so none counts before it is durable;
when the fsync fails every acceptance of the batch is withdrawn and the history restored.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from broker_service.core import fastcodec
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
        (outcome,) = self.admit_many(ledger, journal, [(device, message)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def admit_many(
        self, ledger: RoundLedger, journal: Journal, messages: Sequence[tuple[str, bytes]]
    ) -> list[Accepted | Exception | None]:
        """`admit` for each (device, message) in arrival order, journaled with one fsync; one
        outcome per message: the Accepted update, None for a duplicate, or the exception `admit`
        would raise (Rejected, recorded with `ledger.reject`; OSError when the batch could not
        be journaled, each acceptance withdrawn as a storage error; anything else unexpected,
        for the caller to count, the ledger unchanged by it)."""
        outcomes: list[Accepted | Exception | None] = []
        records: list[tuple[str, bytes]] = []
        history = self.bounds.to_list()
        payloads: list[bytes | Rejected] = []
        for device, message in messages:
            try:
                payloads.append(self.authenticate(device, message))
            except Rejected as exc:
                payloads.append(exc)
        authentic = [p for p in payloads if isinstance(p, bytes)]
        decoded = iter(fastcodec.decode_many(authentic, ledger.max_payload))  # in one batch
        for (device, _), payload in zip(messages, payloads, strict=True):
            try:
                if isinstance(payload, Rejected):
                    raise payload
                ledger.max_norm = self.bounds.norm_bound(self.theta)
                accepted = ledger.offer(device, payload, next(decoded))
            except Rejected as exc:
                ledger.reject(device, exc.reason)
                outcomes.append(exc)
                continue
            except Exception as exc:  # counted by the caller; the batch goes on
                outcomes.append(exc)
                continue
            outcomes.append(accepted)
            if accepted is not None:
                records.append((device, payload))
                self.bounds.remember(accepted.update)
        if not records:
            return outcomes
        try:
            journal.append_many(records)
        except OSError as exc:
            for device, _ in records:
                ledger.withdraw(device, reasons.STORAGE_ERROR)
            self.bounds.norms.clear()
            self.bounds.restore(history)
            return [exc if isinstance(o, Accepted) else o for o in outcomes]
        return outcomes

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
