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


OLD_DEFAULTS = {
    "residual_decay": 1.0,
    "residual_max_away": 0,
    "head_init": "sgd",
    "head_ridge": 1.0,
    "clip_norm": 0.0,
    "clip_scale": 0.0,
    "trim": 0.2,
    "rotations": False,
    "aggregation": "mean",
    "server_optimiser": "sgd",
}


def test_removed_settings_at_their_old_defaults_are_dropped_on_load(tmp_path):
    path = tmp_path / "old.ckpt.json"
    ckpt = _ckpt()
    ckpt.settings = dict(OLD_DEFAULTS, top_p=10.0)
    save(path, ckpt)
    assert load(path).settings == {"top_p": 10.0, "aggregation": "mean", "server_optimiser": "sgd"}


@pytest.mark.parametrize(
    "key,value",
    [
        ("head_init", "closed_form"),
        ("residual_decay", 0.9),
        ("trim", 0.1),
        ("rotations", True),
        ("aggregation", "median"),
        ("server_optimiser", "yogi"),
    ],
)
def test_a_checkpoint_that_sets_a_removed_setting_is_refused_naming_it(tmp_path, key, value):
    path = tmp_path / "old.ckpt.json"
    ckpt = _ckpt()
    ckpt.settings = dict(OLD_DEFAULTS, **{key: value})
    save(path, ckpt)
    with pytest.raises(CheckpointError, match="uses removed setting %s=%s$" % (key, value)):
        load(path)


def test_the_service_refuses_to_resume_a_checkpoint_with_a_removed_setting(tmp_path):
    """The service reads its checkpoint at start: a removed setting stops it with the reason."""
    from broker_service.observe.logs import EventLog
    from broker_service.server.config import ServiceConfig
    from broker_service.server.service import AggregationService

    cfg = ServiceConfig(use_case="sine", state_dir=str(tmp_path / "state"), eval_devices=1)
    first = AggregationService(cfg, EventLog(path=tmp_path / "log"))
    first._save()
    first.lock.release()
    (saved,) = (tmp_path / "state").rglob("*.json")  # the service's one checkpoint
    doc = json.loads(saved.read_text())
    doc["settings"]["head_init"] = "closed_form"
    saved.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="uses removed setting head_init=closed_form"):
        AggregationService(cfg, EventLog(path=tmp_path / "log"))
