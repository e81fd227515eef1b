"""Checkpoints: round trip, atomic replacement, damage detected with a clear error."""

import json

import numpy as np
import pytest

from broker_service.server.checkpoint import Checkpoint, CheckpointError, load, save


def _ckpt(r=3):
    theta = np.linspace(-1, 1, 17, dtype=np.float32)
    return Checkpoint(
        spec={"input": [1], "layers": [{"type": "dense", "units": 1}]},
        theta=theta,
        round=r,
        algorithm="tinymetafed",
        use_case="sine",
        settings={"top_p": 10.0},
    )


def test_round_trip(tmp_path):
    path = tmp_path / "m.ckpt.json"
    save(path, _ckpt())
    back = load(path)
    np.testing.assert_array_equal(back.theta, _ckpt().theta)
    assert (back.round, back.algorithm, back.settings) == (3, "tinymetafed", {"top_p": 10.0})


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "m.ckpt.json"
    save(path, _ckpt(1))
    save(path, _ckpt(2))
    assert load(path).round == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m.ckpt.json"]


def test_damage_is_detected(tmp_path):
    path = tmp_path / "m.ckpt.json"
    save(path, _ckpt())
    doc = json.loads(path.read_text())
    doc["theta_crc32"] ^= 1
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="damaged"):
        load(path)
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable"):
        load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "missing.json")


def test_the_server_optimiser_state_round_trips_and_is_checked(tmp_path):
    path = tmp_path / "m.ckpt.json"
    ckpt = _ckpt()
    m = np.linspace(-3, 3, 17, dtype=np.float32)
    ckpt.server_state = {"optimiser": "adam", "step": 7, "m": m, "v": m * m}
    save(path, ckpt)
    back = load(path).server_state
    assert (back["optimiser"], back["step"]) == ("adam", 7)
    np.testing.assert_array_equal(back["m"], m)
    np.testing.assert_array_equal(back["v"], m * m)
    doc = json.loads(path.read_text())
    doc["server_state"]["v"]["array"]["crc32"] ^= 1
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="server_state v is damaged"):
        load(path)
    ckpt.server_state = {"m": np.array([np.nan], dtype=np.float32)}
    save(path, ckpt)
    with pytest.raises(CheckpointError, match="server_state m has non-finite"):
        load(path)


def test_a_checkpoint_written_before_server_state_loads_with_none(tmp_path):
    path = tmp_path / "m.ckpt.json"
    save(path, _ckpt())
    doc = json.loads(path.read_text())
    del doc["server_state"]
    path.write_text(json.dumps(doc))
    assert load(path).server_state == {}
