"""The session totals: counting a round, and the checkpoint form they are kept in."""

from __future__ import annotations

import json
import math
from collections import Counter

from broker_service.server.totals import Totals
from device_agent import reasons

CHECKPOINT_KEYS = ["updates", "bytes_up", "bytes_down", "dense_bytes_up", "energy_mj", "rejected"]


def test_round_trip_through_json():
    totals = Totals(7, 1200, 5400, 9000, 3.25, Counter({reasons.LATE: 2, reasons.BAD_KIND: 1}))
    doc = json.loads(json.dumps(totals.to_dict()))
    assert list(doc) == CHECKPOINT_KEYS
    back = Totals.from_dict(doc)
    assert back == totals and isinstance(back.rejected, Counter)
    back.rejected[reasons.LATE] += 1  # the copy is independent
    assert totals.rejected[reasons.LATE] == 2


def test_an_older_checkpoint_missing_keys_counts_from_zero():
    assert Totals.from_dict({"updates": 4, "bytes_up": 100}) == Totals(updates=4, bytes_up=100)
    assert Totals.from_dict({}) == Totals() == Totals.from_dict(None)


def test_add_round():
    totals = Totals(bytes_down=50)
    totals.add_round(3, 300, 900, 1.5, Counter({reasons.LATE: 1}))
    totals.add_round(2, 200, 600, 0.5, {reasons.LATE: 1, reasons.NORM_BOUND: 1})
    assert totals == Totals(
        5, 500, 50, 1500, 2.0, Counter({reasons.LATE: 2, reasons.NORM_BOUND: 1})
    )
    assert totals.upload_saving() == 3.0
    assert math.isnan(Totals().upload_saving())
