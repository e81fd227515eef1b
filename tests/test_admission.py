"""Update admission without MQTT: signature, norm bound, the ledger's checks and the journal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from broker_service.core.bounds import MIN_NORMS, InfluenceBounds
from broker_service.server.admission import Admission, load_hmac_keys
from broker_service.server.config import ConfigError
from broker_service.server.journal import Journal
from broker_service.server.rounds import Rejected, RoundLedger
from device_agent import codec, reasons
from device_agent.auth import sign

N = 16
KEY = bytes(range(32))


def delta(values: tuple[float, ...] = (0.6, 0.8)) -> bytes:
    """A valid update for round 1 of a model of N parameters."""
    return bytes(codec.encode(codec.KIND_DELTA, N, list(range(len(values))), list(values), 1, 1))


def open_round(*invited: str) -> RoundLedger:
    ledger = RoundLedger(1, 1, N)
    ledger.invite(list(invited))
    return ledger


class FullDisk(Journal):
    """A journal whose disk is full."""

    def append_many(self, records) -> None:
        raise OSError(28, "No space left on device")


def test_an_admitted_update_is_journaled_and_its_norm_remembered(tmp_path):
    admission, ledger, journal = Admission(None), open_round("a"), Journal(tmp_path, 1)
    accepted = admission.admit(ledger, journal, "a", delta())
    assert accepted is not None and set(ledger.accepted) == {"a"}
    assert journal.replay() == [("a", delta())]
    assert admission.bounds.to_list() == [pytest.approx(1.0)]
    assert admission.admit(ledger, journal, "a", delta()) is None  # a duplicate
    assert len(journal.replay()) == 1 and ledger.duplicates == 1


def test_signed_updates(tmp_path):
    admission = Admission({"a": KEY, "b": KEY})
    ledger, journal = open_round("a", "b", "c"), Journal(tmp_path, 1)
    assert admission.admit(ledger, journal, "a", sign(KEY, delta())) is not None
    for device, message, reason in (
        ("b", sign(bytes(32), delta()), reasons.BAD_SIGNATURE),
        ("c", sign(KEY, delta()), reasons.UNKNOWN_DEVICE),
    ):
        with pytest.raises(Rejected) as caught:
            admission.admit(ledger, journal, device, message)
        assert caught.value.reason == reason
    assert ledger.rejected == {reasons.BAD_SIGNATURE: 1, reasons.UNKNOWN_DEVICE: 1}
    assert ledger.refused == {"b": reasons.BAD_SIGNATURE, "c": reasons.UNKNOWN_DEVICE}
    assert [d for d, _ in journal.replay()] == ["a"]


def test_a_refused_update_is_recorded_in_the_ledger_and_not_journaled(tmp_path):
    admission, ledger, journal = Admission(None), open_round("a"), Journal(tmp_path, 1)
    with pytest.raises(Rejected):
        admission.admit(ledger, journal, "a", delta()[:-1])
    assert sum(ledger.rejected.values()) == 1 and set(ledger.refused) == {"a"}
    assert journal.replay() == [] and not admission.bounds.norms


def test_a_storage_error_withdraws_the_acceptance(tmp_path):
    admission, ledger = Admission(None), open_round("a")
    with pytest.raises(OSError):
        admission.admit(ledger, FullDisk(tmp_path, 1), "a", delta())
    assert not ledger.accepted and ledger.rejected == {reasons.STORAGE_ERROR: 1}
    assert ledger.waiting_for() == {"a"} and not admission.bounds.norms
    assert admission.admit(ledger, Journal(tmp_path, 1), "a", delta()) is not None


def test_the_norm_bound_comes_from_the_model_until_there_is_history():
    theta = np.full(4, 500.0, dtype=np.float32)  # ‖θ‖ = 1000
    bounds = InfluenceBounds()
    bounds.restore([1.0] * (MIN_NORMS - 1))
    assert bounds.norm_bound(theta) == pytest.approx(1000.0)
    bounds.restore([1.0, 3.0, 3.0])
    assert bounds.norm_bound(theta) == 100.0  # 100× the median, tighter than the model's
    assert bounds.norm_bound(np.full(4, 0.01, dtype=np.float32)) == pytest.approx(0.02)
    assert InfluenceBounds(max_norm=5.0).norm_bound(theta) == 5.0


def test_the_norm_bound_refuses_an_absurd_update(tmp_path):
    admission, ledger, journal = Admission(None), open_round("a", "b"), Journal(tmp_path, 1)
    admission.bounds.restore([0.01] * MIN_NORMS)
    admission.theta = np.ones(N, dtype=np.float32)
    with pytest.raises(Rejected) as caught:
        admission.admit(ledger, journal, "a", delta((3.0, 4.0)))
    assert caught.value.reason == reasons.NORM_BOUND and ledger.refused == {"a": reasons.NORM_BOUND}
    assert admission.admit(ledger, journal, "b", delta((0.3, 0.4))) is not None


def test_load_hmac_keys(tmp_path):
    path = tmp_path / "keys.json"
    assert load_hmac_keys(None) is None
    path.write_text(json.dumps({"a": KEY.hex()}))
    assert load_hmac_keys(str(path)) == {"a": KEY}
    path.write_text(json.dumps({"a": "not hex"}))
    with pytest.raises(ConfigError):
        load_hmac_keys(str(path))


def test_a_batch_is_checked_in_order_and_journaled_together(tmp_path):
    admission, ledger = Admission(None), open_round("a", "b", "c", "d")
    journal = Journal(tmp_path, 1)
    batch = [("a", delta()), ("b", delta()[:-1]), ("a", delta()), ("x", delta()), ("c", delta())]
    outcomes = admission.admit_many(ledger, journal, batch)
    assert outcomes[0] is not None and outcomes[4] is not None and outcomes[2] is None
    assert [o.reason for o in (outcomes[1], outcomes[3])] == [
        reasons.BAD_LENGTHS,
        reasons.NOT_IN_COHORT,
    ]
    assert [d for d, _ in journal.replay()] == ["a", "c"]
    assert set(ledger.accepted) == {"a", "c"} and ledger.duplicates == 1
    assert len(admission.bounds.norms) == 2 and ledger.waiting_for() == {"d"}


def test_a_batch_that_cannot_be_journaled_counts_none_of_its_updates(tmp_path):
    admission, ledger = Admission(None), open_round("a", "b", "c")
    admission.bounds.restore([0.5])
    outcomes = admission.admit_many(
        ledger, FullDisk(tmp_path, 1), [("a", delta()), ("b", delta()[:-1]), ("c", delta())]
    )
    assert isinstance(outcomes[0], OSError) and isinstance(outcomes[2], OSError)
    assert outcomes[1].reason == reasons.BAD_LENGTHS
    assert not ledger.accepted and ledger.rejected[reasons.STORAGE_ERROR] == 2
    assert admission.bounds.to_list() == [0.5] and ledger.waiting_for() == {"a", "c"}


CRASH_AFTER_BATCH = """
import os, signal, sys
from pathlib import Path
from broker_service.server.admission import Admission
from broker_service.server.journal import Journal
from tests.test_admission import delta, open_round
devices = ["d%d" % i for i in range(40)]
ledger = open_round(*devices)
outcomes = Admission(None).admit_many(
    ledger, Journal(Path(sys.argv[1]), 1), [(d, delta()) for d in devices]
)
print(sum(o is not None for o in outcomes), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_batch_counted_before_a_crash_is_replayed_after_it(tmp_path):
    """Group commit: every update of a batch that admit_many accepted survives a SIGKILL right
    after it returned, and a restarted round counts each of them."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_BATCH, str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -9 and done.stdout.split() == ["40"], done.stderr
    ledger = RoundLedger(1, 1, N)
    records = Journal(tmp_path, 1).replay()
    assert [ledger.restore(d, p) is not None for d, p in records] == [True] * 40
    assert sorted(ledger.accepted) == sorted("d%d" % i for i in range(40))
