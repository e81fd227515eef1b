"""Per-device trust (core.trust): the sketched histories, their consensus, the agreement and
the weight it gives, the bounded and restorable state, and its place in the bounds' step."""

from __future__ import annotations

import numpy as np
import pytest

from broker_service.core.aggregate import SparseUpdate, sparse_weighted_mean
from broker_service.core.bounds import InfluenceBounds
from broker_service.core.hyperparams import settings_for
from broker_service.core.strategies import TinyMetaFed
from broker_service.core.trust import (
    FULL,
    PROBATION,
    RATE,
    RECENT,
    SKETCH,
    DeviceTrust,
    agreements,
    consensus,
    next_histories,
    sketch_layout,
    sketches,
    trust_weight,
    weighted,
)
from broker_service.server.checkpoint import Checkpoint, load, save

N = 6


def as_vector(history) -> np.ndarray:
    """A history (direction, length) as the vector it stands for."""
    return np.asarray(history[0], dtype=np.float64) * history[1]


def sparse(indices, values, samples=30) -> SparseUpdate:
    return SparseUpdate(
        np.asarray(indices, dtype=np.uint32), np.asarray(values, dtype=np.float32), samples
    )


def test_the_sketch_keeps_inner_products_and_is_the_same_in_every_run():
    n = 5000
    layout = sketch_layout(n)
    again = sketch_layout(n)
    np.testing.assert_array_equal(layout[0], again[0])
    np.testing.assert_array_equal(layout[1], again[1])
    assert set(np.unique(layout[1])) == {-1.0, 1.0} and layout[0].max() < SKETCH
    rng = np.random.default_rng(1)
    x = rng.standard_normal(n)
    y = 0.6 * x + 0.8 * rng.standard_normal(n)  # cosine about 0.6
    both = sketches([sparse(range(n), x), sparse(range(n), y)], layout)
    exact = float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
    [found] = agreements(next_histories([None], both[:1], 0.0), both[1])
    assert found == pytest.approx(exact, abs=0.1)
    rows = sketches([sparse([3, 7], [1.0, 2.0]), sparse([], []), sparse([7], [4.0])], layout)
    expected = np.zeros((3, SKETCH))
    for row, i, v in ((0, 3, 1.0), (0, 7, 2.0), (2, 7, 4.0)):
        expected[row, layout[0][i]] += layout[1][i] * v
    np.testing.assert_allclose(rows, expected)
    assert sketches([sparse([], [])], layout).shape == (1, SKETCH)


def test_a_history_forgets_at_its_rate_at_any_scale():
    [first] = next_histories([None], np.full((1, SKETCH), 1e-6), 0.5)
    assert first[0].dtype == np.float16 and first[1] == pytest.approx(1e-6 * np.sqrt(SKETCH))
    np.testing.assert_allclose(as_vector(first), 1e-6, rtol=1e-3)
    second, empty = next_histories([first, None], np.array([[2e-6] * SKETCH, [0.0] * SKETCH]), 0.5)
    np.testing.assert_allclose(as_vector(second), 2.5e-6, rtol=1e-3)
    assert empty[1] == 0.0 and not np.any(as_vector(empty))


def test_the_consensus_is_the_majoritys_direction_whatever_the_minority_sends():
    rng = np.random.default_rng(2)
    shared = rng.standard_normal(SKETCH)
    honest = [shared + 2.0 * rng.standard_normal(SKETCH) for _ in range(16)]
    hostile = [-100.0 * h for h in honest[:4]]  # reversed and long
    histories = next_histories([None] * 20, np.array(honest + hostile), 0.02)
    reference = consensus(histories)
    assert reference is not None
    [found] = agreements(next_histories([None], shared[None, :], 0.0), reference)
    assert found > 0.5
    assert consensus(histories[:2]) is None  # too few devices for a consensus


def test_the_weight():
    assert trust_weight(0.3, 0.1) == 1.0 and trust_weight(0.0, 0.1) == 1.0  # only distrust costs
    assert trust_weight(-0.05, 0.1) == pytest.approx(0.5)
    assert trust_weight(-0.2, 0.1) == 0.0
    assert trust_weight(-0.01, 0.0) == 0.0 and trust_weight(0.0, 0.0) == 1.0


def test_weighted_multiplies_in_and_drops_zero_weights():
    a, b = sparse([0], [1.0]), sparse([1], [1.0])
    out = weighted([a, b], [0.5, 0.0])
    assert len(out) == 1 and out[0].weight == 0.5 and out[0].samples == 30
    mean = sparse_weighted_mean(2, [sparse([0], [1.0]), SparseUpdate(b.indices, b.values, 30, 0.5)])
    np.testing.assert_allclose(mean, [1 / 1.5, 0.5 / 1.5])


def honest_round(rng, count, n=64):
    """Updates of devices with tasks of their own sharing a small common direction (the first
    eight coordinates), as Reptile's are: each device's task part is larger than the shared
    part."""
    shared = np.zeros(n)
    shared[:8] = 1.0
    return [sparse(range(n), shared + 1.5 * rng.standard_normal(n)) for _ in range(count)]


def run_rounds(trust, devices, rounds, reversed_ids=(), n=64, seed=0, start=0):
    rng = np.random.default_rng(seed)
    weights = []
    for t in range(start, start + rounds):
        updates = honest_round(rng, len(devices), n)
        for i, device in enumerate(devices):
            if device in reversed_ids:
                updates[i] = sparse(range(n), -3.0 * np.asarray(updates[i].values))
        weights = trust.weigh(devices, updates, t, n)
        trust.commit()
    return weights


def test_persistently_reversed_devices_stop_counting_and_honest_ones_keep_theirs():
    trust = DeviceTrust(rate=0.1, full=0.2)
    devices = ["d%d" % i for i in range(16)] + ["evil%d" % i for i in range(4)]
    evil = set(devices[16:])
    weights = run_rounds(trust, devices, 60, evil)
    assert weights[16:] == [0.0] * 4 and all(trust.of(d) < -0.2 for d in evil)
    assert sum(w == 1.0 for w in weights[:16]) >= 15  # an honest device may dip, rarely
    assert all(trust.of(d) > 0 for d in devices[:16])
    assert set(trust.downweighted) >= {16, 17, 18, 19}


def test_a_quarter_reversing_from_the_first_round_cannot_turn_the_consensus_round():
    trust = DeviceTrust(rate=0.1, full=0.2)
    devices = ["d%d" % i for i in range(15)] + ["evil%d" % i for i in range(5)]
    weights = run_rounds(trust, devices, 30, set(devices[15:]), seed=3)
    assert weights[15:] == [0.0] * 5 and sum(weights[:15]) >= 14


def test_fresh_ids_every_round_cannot_outvote_the_fleet():
    """A device re-enrolling under a new id each round: after 100 rounds its 400 ids outnumber
    the 16 honest devices, but the consensus counts updates, not ids."""
    trust = DeviceTrust(rate=0.1, full=0.2)
    rng = np.random.default_rng(5)
    honest = ["d%d" % i for i in range(16)]
    for t in range(100):
        updates = honest_round(rng, 20)
        for i in range(16, 20):
            updates[i] = sparse(range(64), -3.0 * np.asarray(updates[i].values))
        ids = honest + ["evil%d~%d" % (i, t) for i in range(4)]
        weights = trust.weigh(ids, updates, t, 64)
        trust.commit()
    assert len(trust.histories) == 416 and len(trust.recent) == RECENT
    assert sum(weights[:16]) >= 15 and sum(weights[16:]) <= 1.0


def test_nothing_is_kept_until_the_step_is_committed_and_off_means_weight_one():
    trust = DeviceTrust(rate=0.5, full=0.1)
    rng = np.random.default_rng(4)
    updates = honest_round(rng, 4)
    trust.weigh(["a", "b", "c", "x"], updates, 0, 64)
    assert trust.pending and not trust.histories and trust.of("x") == 0.0  # refused round
    assert trust.weigh([], [], 1, 64) == [] and not trust.pending  # a round without updates
    off = DeviceTrust(rate=0.0)
    assert off.weigh(["x"], [sparse([0], [-1.0])], 0, 64) == [1.0] and not off.enabled
    off.commit()
    assert not off.histories


def test_without_a_consensus_or_with_another_models_histories_every_device_counts():
    trust = DeviceTrust(rate=0.02, full=0.1, probation=1)
    assert trust.weigh(["x", "y"], [sparse([0], [1.0]), sparse([0], [-1.0])], 0, N) == [1.0] * 2
    trust.commit()
    run_rounds(trust, ["a", "b", "c", "x"], 5)  # a model of 64: the first histories forgotten
    assert trust.n == 64 and "y" not in trust.histories
    assert trust.weigh(["x"], [sparse([100], [-1.0])], 9, 128) == [1.0]  # another model again
    assert trust.n == 128


def test_a_newcomer_earns_its_say_over_its_first_updates():
    """A device's k-th update counts min(1, k / probation) of its trust weight, before there is
    a consensus and after; probation is not distrust (`downweighted` stays empty), and the
    counts are what the checkpoint keeps."""
    trust = DeviceTrust(rate=0.02, full=0.2, probation=3)
    rng = np.random.default_rng(6)
    shares = []
    for t in range(4):
        ids = ["a", "b", "c"] if t < 3 else ["a", "b", "c", "new"]
        shares.append(trust.weigh(ids, honest_round(rng, len(ids)), t, 64))
        assert trust.downweighted == [] or t == 3
        trust.commit()
    assert shares[0] == pytest.approx([1 / 3] * 3) and shares[1] == pytest.approx([2 / 3] * 3)
    assert shares[2][:3] == [1.0] * 3 and shares[3][3] <= 1 / 3
    assert trust.to_dict()["devices"]["a"][4] == 4
    back = DeviceTrust(rate=0.02, full=0.2, probation=3, saved=trust.to_dict())
    assert back.updates == trust.updates
    saved = trust.to_dict()
    saved["devices"] = {d: entry[:4] for d, entry in saved["devices"].items()}
    assert DeviceTrust(probation=3, saved=saved).updates["new"] == 3  # saved before counts
    for bad in (0, -1, 1.5, True, "3"):
        saved["devices"]["a"] = trust.to_dict()["devices"]["a"][:4] + [bad]
        assert "a" not in DeviceTrust(probation=3, saved=saved).trust


def test_a_device_under_a_fresh_id_every_round_counts_at_most_its_probation_share():
    trust = DeviceTrust(rate=0.02, full=0.2, probation=3)
    rng = np.random.default_rng(7)
    honest = ["d%d" % i for i in range(16)]
    for t in range(30):
        updates = honest_round(rng, 20)
        ids = honest + ["evil%d~%d" % (i, t) for i in range(4)]
        weights = trust.weigh(ids, updates, t, 64)  # honest-looking updates, even
        trust.commit()
        assert all(w <= 1 / 3 for w in weights[16:])
    assert weights[:16] == [1.0] * 16


def test_the_state_is_bounded_and_survives_a_checkpoint(tmp_path):
    trust = DeviceTrust(rate=0.05, max_devices=5)
    devices = ["d%d" % i for i in range(6)]
    run_rounds(trust, devices[:5], 3)
    run_rounds(trust, devices[1:], 1, start=3)
    assert sorted(trust.histories) == devices[1:]  # the least recently seen is forgotten
    ckpt = Checkpoint({}, np.zeros(64, np.float32), 5, "tinymetafed", "sine")
    ckpt.extra["trust"] = trust.to_dict()
    save(tmp_path / "c.json", ckpt)
    back = DeviceTrust(rate=0.05, saved=load(tmp_path / "c.json").extra["trust"])
    assert back.trust == trust.trust and back.n == trust.n
    assert [h[1] for h, _ in back.recent] == [h[1] for h, _ in trust.recent]
    for device in trust.histories:
        np.testing.assert_array_equal(
            as_vector(back.histories[device]), as_vector(trust.histories[device])
        )
    rng = np.random.default_rng(9)
    updates = honest_round(rng, 5)
    assert back.weigh(devices[1:], updates, 10, 64) == trust.weigh(devices[1:], updates, 10, 64)


def test_restore_skips_what_is_not_a_trust_entry():
    good = DeviceTrust(rate=0.05)
    run_rounds(good, ["a", "b", "c"], 2)
    saved = good.to_dict()
    entry = saved["devices"]["a"]
    saved["devices"].update(
        {
            "nan": [float("nan"), 1, 1.0, entry[3]],
            "big": [3.0, 1, 1.0, entry[3]],
            "flag": [True, 1, 1.0, entry[3]],
            "short": [0.1, 1, 1.0],
            "round": [0.1, 1.5, 1.0, entry[3]],
            "length": [0.1, 1, -1.0, entry[3]],
            "b64": [0.1, 1, 1.0, "not base64!"],
            "size": [0.1, 1, 1.0, entry[3][:8]],
            "old": [0.1, 1],  # an entry of the version with a server momentum
        }
    )
    trust = DeviceTrust(saved=saved)
    assert sorted(trust.trust) == ["a", "b", "c"]
    assert not DeviceTrust(saved={**saved, "sketch": 7}).trust  # another sketch: not taken over
    assert not DeviceTrust(saved={**saved, "n": -1}).trust
    DeviceTrust(saved={"devices": [1, 2], "n": 3, "sketch": SKETCH})  # not a mapping: ignored
    DeviceTrust(saved=[("x", 1)])  # type: ignore[arg-type]


def test_the_bounds_step_leaves_a_distrusted_device_out():
    n = 64
    settings = settings_for("sine", rounds=100)
    strategy = TinyMetaFed(settings)
    bounds = InfluenceBounds(clip_recent=0.0, trust=DeviceTrust(rate=0.5, full=0.1))
    theta = np.zeros(n, dtype=np.float32)
    good = [sparse(range(8), np.ones(8) + 0.1 * k) for k in range(4)]
    bad = sparse(range(8), -np.ones(8))
    ids = ["a", "b", "c", "d"]
    first = bounds.step(strategy, theta, good, 0, 100, ids)
    assert first is not None and len(bounds.trust.histories) == 4
    moved = bounds.step(strategy, theta, good + [bad], 1, 100, ids + ["evil"])
    assert bounds.trust.downweighted == [4]
    alone = strategy.aggregate(theta, good, 1, 100)
    np.testing.assert_allclose(moved, alone)  # as if the reversed update had not come
    plain = InfluenceBounds(clip_recent=0.0)
    same = plain.step(strategy, theta, good + [bad], 1, 100)  # no ids: no trust
    np.testing.assert_allclose(same, strategy.aggregate(theta, good + [bad], 1, 100))


def test_from_settings_reads_the_trust_settings():
    over = {"trust_rate": 0.3, "trust_full": 0.4, "trust_probation": 7, "trust_clip": False}
    bounds = InfluenceBounds.from_settings(settings_for("sine", **over))
    assert (bounds.trust.rate, bounds.trust.full, bounds.trust.probation) == (0.3, 0.4, 7)
    assert not bounds.trust_clip
    defaults = InfluenceBounds.from_settings(settings_for("sine"))
    default = defaults.trust
    assert default.enabled and (default.rate, default.full) == (RATE, FULL)  # on by default
    assert default.probation == PROBATION and defaults.trust_clip
    assert not InfluenceBounds.from_settings(settings_for("sine", trust_rate=0.0)).trust.enabled
    for bad in (0, -2, 2.5, True, "3"):
        with pytest.raises(ValueError, match="trust_probation"):
            InfluenceBounds.from_settings(settings_for("sine", trust_probation=bad))


class FixedTrust(DeviceTrust):
    """Trust that gives the updates the weights it was made with."""

    def __init__(self, weights):
        super().__init__()
        self.fixed = list(weights)

    def weigh(self, devices, updates, t, n):
        return list(self.fixed)


def test_a_distrusted_update_is_clipped_to_its_weight_times_the_clip_bound():
    theta = np.full(8, 100.0, dtype=np.float32)  # the refusal bound (‖θ_g‖) is far away
    updates = [sparse(range(8), np.full(8, v)) for v in (1.0, 1.0, 1.0, 9.0, 9.0)]
    ids = ["a", "b", "c", "d", "e"]
    for on in (True, False):
        bounds = InfluenceBounds(
            clip_recent=1.0, trust=FixedTrust([1, 1, 1, 0.5, 0]), trust_clip=on
        )
        bounds.restore([np.sqrt(8.0)] * 5)  # the median norm: the clip bound is ‖(1, …, 1)‖
        kept = bounds.weigh(ids, bounds.clip(theta, updates), 0, 8)
        assert len(kept) == 4 and [u.weight for u in kept] == [1, 1, 1, 0.5]
        norms = [float(np.linalg.norm(u.values)) for u in kept]
        bound = np.sqrt(8.0)
        assert norms[:3] == pytest.approx([bound] * 3)
        assert norms[3] == pytest.approx(0.5 * bound if on else bound)
