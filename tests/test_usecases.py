"""Tests of the real-data use cases (Omniglot, FSDD keyword audio, UCI Occupancy), the registry
and the numpy MFCC front end. The use cases run on the real data from the `data_dir` fixture."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from broker_service.core.episode import Episode
from broker_service.usecases import mfcc as M
from broker_service.usecases.base import DataMissingError, UseCase, per_class_split
from broker_service.usecases.kws import KwsUseCase, find_recordings, read_wav, split_fold
from broker_service.usecases.occupancy import OccupancyUseCase, stratified_sample
from broker_service.usecases.omniglot import OmniglotUseCase
from broker_service.usecases.registry import load_use_case

MAX_MACS = 60_000
MAX_PARAMS = 5_000


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def omniglot(data_dir: Path) -> OmniglotUseCase:
    return OmniglotUseCase(data_dir, seed=0)


@pytest.fixture(scope="module")
def kws(data_dir: Path) -> KwsUseCase:
    return KwsUseCase(data_dir, seed=0)


@pytest.fixture(scope="module")
def occupancy(data_dir: Path) -> OccupancyUseCase:
    return OccupancyUseCase(data_dir, seed=0)


@pytest.fixture(params=["omniglot", "kws", "occupancy"])
def use_case(request: pytest.FixtureRequest) -> UseCase:
    return request.getfixturevalue(request.param)


def _n_classes(uc: UseCase) -> int:
    return uc.spec["layers"][-1]["units"]


def _spec_cost(spec: dict) -> tuple[tuple[int, ...], int, int]:
    """Independent shape walk (valid padding): (output shape, parameters, MACs)."""
    shape = tuple(spec["input"])
    params = macs = 0
    for layer in spec["layers"]:
        kind = layer["type"]
        if kind == "conv2d":
            c, h, w = shape
            kh, kw = (layer["kernel"],) * 2 if isinstance(layer["kernel"], int) else layer["kernel"]
            sh, sw = (layer["stride"],) * 2 if isinstance(layer["stride"], int) else layer["stride"]
            f = layer["filters"]
            shape = (f, (h - kh) // sh + 1, (w - kw) // sw + 1)
            assert min(shape) >= 1, spec
            params += f * c * kh * kw + f
            macs += shape[0] * shape[1] * shape[2] * c * kh * kw
        elif kind in ("maxpool", "avgpool"):
            c, h, w = shape
            shape = (c, h // layer["size"], w // layer["size"])
            assert min(shape) >= 1, spec
        elif kind == "flatten":
            shape = (int(np.prod(shape)),)
        elif kind == "dense":
            params += shape[0] * layer["units"] + layer["units"]
            macs += shape[0] * layer["units"]
            shape = (layer["units"],)
    return shape, params, macs


# ---------------------------------------------------------------- common contract


def test_default_spec_fits_a_microcontroller(use_case: UseCase) -> None:
    out, params, macs = _spec_cost(use_case.spec)
    assert out == (_n_classes(use_case),)
    assert params <= MAX_PARAMS and macs <= MAX_MACS, (params, macs)
    assert use_case.spec["loss"] == "softmax_ce" and use_case.metric == "accuracy"


def test_stream_shapes_dtypes_and_labels(use_case: UseCase) -> None:
    x, y = use_case.stream(use_case.device_ids[-1], 9, np.random.default_rng(3))
    assert x.shape == (9, *use_case.spec["input"]) and x.dtype == np.float32
    assert y.shape == (9,) and y.dtype == np.int64
    assert y.min() >= 0 and y.max() < _n_classes(use_case)
    assert np.isfinite(x).all()


def test_episode_shapes_dtypes_and_labels(use_case: UseCase) -> None:
    episodes = use_case.new_device_episodes(3, np.random.default_rng(4))
    assert len(episodes) == 3 and all(isinstance(e, Episode) for e in episodes)
    assert len({e.device_id for e in episodes}) == 3
    for e in episodes:
        for x, y in ((e.support_x, e.support_y), (e.query_x, e.query_y)):
            assert x.dtype == np.float32 and x.shape[1:] == tuple(use_case.spec["input"])
            assert y.dtype == np.int64 and y.shape == (len(x),) and len(x) > 0
            assert y.min() >= 0 and y.max() < _n_classes(use_case)
        assert e.device_id not in use_case.device_ids


def test_validation_and_test_devices_differ(use_case: UseCase) -> None:
    val = use_case.new_device_episodes(3, np.random.default_rng(4), "validation")
    test = use_case.new_device_episodes(3, np.random.default_rng(4), "test")
    assert {e.unit_id for e in val}.isdisjoint(e.unit_id for e in test)
    with pytest.raises(ValueError, match="split"):
        use_case.new_device_episodes(1, np.random.default_rng(4), "train")


def test_same_rng_gives_same_samples(use_case: UseCase) -> None:
    device = use_case.device_ids[1]
    a = use_case.stream(device, 16, np.random.default_rng(7))
    b = use_case.stream(device, 16, np.random.default_rng(7))
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    e1 = use_case.new_device_episodes(2, np.random.default_rng(8))
    e2 = use_case.new_device_episodes(2, np.random.default_rng(8))
    for p, q in zip(e1, e2, strict=True):
        assert p.device_id == q.device_id
        assert np.array_equal(p.support_x, q.support_x) and np.array_equal(p.query_y, q.query_y)


@pytest.mark.parametrize("name", ["omniglot", "occupancy"])
def test_same_seed_gives_same_fleet(name: str, data_dir: Path) -> None:
    a, b = (load_use_case(name, data_dir, seed=5) for _ in range(2))
    assert a.device_ids == b.device_ids and a.preprocessing == b.preprocessing
    device = a.device_ids[2]
    xa, ya = a.stream(device, 8, np.random.default_rng(1))
    xb, yb = b.stream(device, 8, np.random.default_rng(1))
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


def test_no_data_dir_raises_data_missing() -> None:
    for name, expected in [
        ("omniglot", "omniglot/"),
        ("kws", "fsdd/"),
        ("occupancy", "occupancy/"),
    ]:
        with pytest.raises(DataMissingError, match=name) as info:
            load_use_case(name, None)
        assert expected in str(info.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("omniglot", "images_background*.zip"),
        ("kws", "fsdd/recordings/{digit}_{speaker}_{index}.wav"),
        ("occupancy", "datatraining"),
    ],
)
def test_empty_data_dir_names_the_expected_path(name: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as info:
        load_use_case(name, tmp_path)
    message = str(info.value)
    assert name in message and expected in message and str(tmp_path) in message


def test_sine_validation_waves_are_not_the_test_waves() -> None:
    sine = load_use_case("sine", None, seed=0)
    val = sine.new_device_episodes(20, np.random.default_rng(1), "validation")
    test = sine.new_device_episodes(20, np.random.default_rng(1), "test")
    assert all(e.device_id.startswith("sine-val-") for e in val)
    val_waves = {e.query_y.tobytes() for e in val}
    assert val_waves.isdisjoint(e.query_y.tobytes() for e in test) and len(val_waves) == 20


def test_per_class_split_takes_shots_per_class_and_caps_the_query() -> None:
    classes = [np.arange(0, 6), np.arange(10, 14), np.arange(20, 30)]
    support, sy, query, qy = per_class_split(classes, 2, np.random.default_rng(0), query=3)
    assert np.bincount(sy).tolist() == [2, 2, 2] and np.bincount(qy).tolist() == [3, 2, 3]
    for rows, labels in ((support, sy), (query, qy)):
        assert rows.dtype == labels.dtype == np.int64
        assert all(row in classes[label] for row, label in zip(rows, labels, strict=True))
    assert set(support.tolist()).isdisjoint(query.tolist())
    _, _, everything, _ = per_class_split(classes, 2, np.random.default_rng(0))
    assert len(everything) == 20 - 6


def test_registry_sine_and_unknown_names() -> None:
    sine = load_use_case("sine", None, seed=3)
    assert sine.name == "sine" and sine.metric == "mse"
    with pytest.raises(ValueError, match="unknown use case"):
        load_use_case("mnist", None)


# ---------------------------------------------------------------- omniglot


def test_omniglot_images_are_inverted_strokes(omniglot: OmniglotUseCase) -> None:
    images = omniglot.chars.images
    assert images.shape[1:] == (28, 28) and images.min() >= 0.0 and images.max() <= 1.0
    assert 0.02 < images.mean() < 0.3  # strokes (1.0) are sparse on a 0.0 background
    assert len(omniglot.chars.names) == 136 and int(omniglot.chars.counts.sum()) == 136 * 20


def test_omniglot_splits_by_alphabet(omniglot: OmniglotUseCase) -> None:
    assert omniglot.alphabets == {
        "train": ["Balinese", "Early_Aramaic", "Greek"],
        "validation": ["Korean"],
        "test": ["Latin"],
    }
    chars = {part: set(omniglot.character_names(c)) for part, c in omniglot.split_chars.items()}
    assert {part: len(c) for part, c in chars.items()} == {
        "train": 70,
        "validation": 40,
        "test": 26,
    }
    for part, names in chars.items():
        assert {n.split("/")[0] for n in names} == set(omniglot.alphabets[part])
    assert all(set(task) <= set(omniglot.train_chars.tolist()) for task in omniglot.tasks)
    images = {
        part: {omniglot.chars.images[i].tobytes() for c in idx for i in omniglot.chars.members(c)}
        for part, idx in omniglot.split_chars.items()
    }
    for split in ("validation", "test"):
        for e in omniglot.new_device_episodes(4, np.random.default_rng(0), split):
            shown = {img.tobytes() for img in np.concatenate([e.support_x, e.query_x])[:, 0]}
            assert shown <= images[split] and shown.isdisjoint(images["train"])
            assert e.unit_id == e.device_id


def test_omniglot_test_alphabets_come_from_an_evaluation_archive(data_dir, tmp_path) -> None:
    """With an images_evaluation archive, its alphabets are the test alphabets."""
    with zipfile.ZipFile(data_dir / "omniglot" / "images_background_small1.zip") as archive:
        archive.extractall(tmp_path / "omniglot")
    root = tmp_path / "omniglot"
    (root / "images_evaluation").mkdir()
    for alphabet in ("Balinese", "Greek"):
        (root / "images_background_small1" / alphabet).rename(root / "images_evaluation" / alphabet)
    split = OmniglotUseCase(tmp_path, seed=0).alphabets
    assert split["test"] == ["Balinese", "Greek"]
    assert split["validation"] == ["Latin"]
    assert split["train"] == ["Early_Aramaic", "Korean"]


def test_omniglot_one_shot_episodes(omniglot: OmniglotUseCase) -> None:
    assert omniglot.eval_shots == (5, 1)
    (e,) = omniglot.new_device_episodes(1, np.random.default_rng(1), "test", shots=1)
    assert np.bincount(e.support_y).tolist() == [1] * 5
    assert np.bincount(e.query_y).tolist() == [19] * 5


def test_omniglot_episode_is_n_way_k_shot(omniglot: OmniglotUseCase) -> None:
    (e,) = omniglot.new_device_episodes(1, np.random.default_rng(1))
    assert np.bincount(e.support_y).tolist() == [5] * 5
    assert np.bincount(e.query_y).tolist() == [15] * 5
    assert e.support_x.shape == (25, 1, 28, 28)


def test_omniglot_task_labels_are_fixed_per_device(omniglot: OmniglotUseCase) -> None:
    x, y = omniglot.stream("omniglot-007", 200, np.random.default_rng(2))
    task = omniglot.tasks[7]
    for label in range(5):
        allowed = {omniglot.chars.images[i].tobytes() for i in omniglot.chars.members(task[label])}
        assert all(img.tobytes() in allowed for img in x[y == label][:, 0])


def test_omniglot_loads_from_extracted_folder(
    omniglot: OmniglotUseCase, data_dir: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(data_dir / "omniglot" / "images_background_small1.zip") as archive:
        archive.extractall(tmp_path / "omniglot")
    for root in (tmp_path, tmp_path / "omniglot"):
        extracted = OmniglotUseCase(root, seed=0)
        assert extracted.chars.names == omniglot.chars.names
        assert np.array_equal(extracted.chars.images, omniglot.chars.images)


# ---------------------------------------------------------------- kws


def test_kws_speakers_are_held_out_in_turn(kws: KwsUseCase, data_dir: Path) -> None:
    assert kws.units["test"] == ["george", "jackson"]
    assert kws.units["validation"] == ["lucas"]
    assert kws.device_ids == [f"kws-{s}" for s in kws.units["train"]]
    tested, validated = [], []
    for fold in range(KwsUseCase.FOLDS):
        parts = split_fold(sorted(kws.rows), fold, KwsUseCase.FOLDS)
        assert sum(map(len, parts)) == 6 and len(set().union(*parts)) == 6
        tested += parts[2]
        validated += parts[1]
    assert sorted(tested) == sorted(kws.rows) and len(set(validated)) == 3
    for split in ("validation", "test"):
        for i, e in enumerate(kws.new_device_episodes(4, np.random.default_rng(0), split)):
            speakers = kws.units[split]
            assert e.unit == speakers[i % len(speakers)] and e.unit in e.device_id
    with pytest.raises(KeyError):
        kws.stream(f"kws-{kws.units['test'][0]}", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="fold 3"):
        split_fold(sorted(kws.rows), 3, 3)


def test_kws_episode_support_and_query(kws: KwsUseCase) -> None:
    (e,) = kws.new_device_episodes(1, np.random.default_rng(5))
    assert np.bincount(e.support_y, minlength=10).tolist() == [5] * 10
    assert len(e.support_y) + len(e.query_y) == 500  # all of that speaker's recordings
    seen = {x.tobytes() for x in e.support_x}
    assert not any(x.tobytes() in seen for x in e.query_x)


def test_kws_standardization_uses_training_speakers(kws: KwsUseCase, data_dir: Path) -> None:
    rows = np.concatenate([kws.rows[s] for s in kws.units["train"]])
    per_coef = kws.x[rows, 0].reshape(-1, 13).astype(np.float64)
    np.testing.assert_allclose(per_coef.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(per_coef.std(axis=0), 1.0, atol=1e-5)
    first = find_recordings(data_dir)[0]  # row 0: the device recipe reproduces the feature
    raw = M.mfcc(
        M.fix_length(read_wav(first, 8000), 8000), M.MfccConfig(**kws.preprocessing["mfcc"])
    )
    pre = kws.preprocessing
    expected = (raw - np.array(pre["mean"])) / np.array(pre["std"])
    np.testing.assert_allclose(kws.x[0, 0], expected, atol=1e-4)


def test_kws_loads_from_the_fsdd_folder_itself(data_dir: Path) -> None:
    assert len(find_recordings(data_dir / "fsdd")) == len(find_recordings(data_dir)) == 3000


# ---------------------------------------------------------------- occupancy


def test_occupancy_days_split_chronologically(occupancy: OccupancyUseCase) -> None:
    train, val, test = (occupancy.units[k] for k in ("train", "validation", "test"))
    assert (len(train), len(val), len(test)) == (9, 3, 5)
    assert max(train) < min(val) and max(val) < min(test)
    assert occupancy.device_ids[0] == "occupancy-2015-02-02"
    summary = occupancy.split_summary()
    assert summary["test"]["2015-02-14"] == 0.0 and summary["test"]["2015-02-16"] > 0.3
    for split in ("validation", "test"):
        for i, e in enumerate(occupancy.new_device_episodes(5, np.random.default_rng(0), split)):
            days = occupancy.units[split]
            assert e.unit == days[i % len(days)] and e.unit in e.device_id


def test_occupancy_standardized_on_training_days(occupancy: OccupancyUseCase) -> None:
    rows = np.concatenate([occupancy.rows[d] for d in occupancy.units["train"]])
    x = occupancy.x[rows].astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-5)
    assert len(occupancy.preprocessing["mean"]) == 5 == len(occupancy.preprocessing["std"])


def test_occupancy_episodes_are_stratified_and_capped(occupancy: OccupancyUseCase) -> None:
    for e in occupancy.new_device_episodes(5, np.random.default_rng(1)):
        assert len(e.support_y) == 20 and len(e.query_y) <= 400
        if len(np.unique(e.query_y)) == 2:
            assert len(np.unique(e.support_y)) == 2


def test_stratified_sample_is_proportional_and_disjoint() -> None:
    rows = np.arange(100, 200)
    labels = np.array([1] * 30 + [0] * 70)
    pick = stratified_sample(rows, labels, 10, np.random.default_rng(0))
    assert len(set(pick.tolist())) == 10 and set(pick.tolist()) <= set(rows.tolist())
    assert int((labels[pick - 100] == 1).sum()) == 3
    rare = np.array([1] + [0] * 99)
    assert 100 in stratified_sample(rows, rare, 10, np.random.default_rng(0)).tolist()


# ---------------------------------------------------------------- mfcc


def test_pre_emphasis_hand_computed() -> None:
    np.testing.assert_allclose(M.pre_emphasis(np.array([1.0, 2.0, 3.0]), 0.97), [1.0, 1.03, 1.06])


def test_frame_signal_hand_computed() -> None:
    frames = M.frame_signal(np.arange(10.0), 4, 3)
    np.testing.assert_array_equal(frames, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    assert M.frame_signal(np.ones(2), 4, 3).tolist() == [[1, 1, 0, 0]]


def test_fix_length_centres() -> None:
    np.testing.assert_array_equal(M.fix_length(np.arange(1, 4), 7), [0, 0, 1, 2, 3, 0, 0])
    np.testing.assert_array_equal(M.fix_length(np.arange(10), 4), [3, 4, 5, 6])


def test_dct_is_orthonormal_and_matches_hand_values() -> None:
    for n in (2, 13, 26):
        basis = M.dct_matrix(n)
        np.testing.assert_allclose(basis @ basis.T, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(M.dct2(np.array([1.0, 0.0])), [np.sqrt(0.5), np.sqrt(0.5)])
    np.testing.assert_allclose(M.dct2(np.ones(4)), [2.0, 0.0, 0.0, 0.0], atol=1e-12)


def test_dct_matches_the_direct_sum() -> None:
    x = np.random.default_rng(0).normal(size=(3, 8))
    n = np.arange(8)
    ref = np.zeros((3, 5))
    for k in range(5):
        scale = np.sqrt((1 if k == 0 else 2) / 8)
        ref[:, k] = scale * (x * np.cos(np.pi * k * (2 * n + 1) / 16)).sum(-1)
    np.testing.assert_allclose(M.dct2(x, 5), ref, atol=1e-12)


def test_power_spectrum_matches_explicit_dft() -> None:
    frame = np.random.default_rng(1).normal(size=(1, 16))
    windowed = frame[0] * (0.54 - 0.46 * np.cos(2 * np.pi * np.arange(16) / 15))
    k, t = np.arange(9)[:, None], np.arange(16)[None, :]
    dft = (windowed * np.exp(-2j * np.pi * k * t / 16)).sum(-1)
    np.testing.assert_allclose(M.power_spectrum(frame, 16)[0], np.abs(dft) ** 2 / 16, atol=1e-10)


def test_mel_scale_and_filterbank() -> None:
    assert abs(float(M.hz_to_mel(1000.0)) - 1000.0) < 0.1
    np.testing.assert_allclose(M.mel_to_hz(M.hz_to_mel([0.0, 440.0, 4000.0])), [0, 440, 4000])
    bank = M.mel_filterbank(26, 256, 8000, 20.0, 4000.0)
    assert bank.shape == (26, 129) and bank.min() >= 0.0 and bank.max() <= 1.0
    assert (bank.sum(axis=1) > 0).all()  # no empty filter
    assert (np.diff(bank.argmax(axis=1)) >= 0).all()


@pytest.mark.parametrize("tone_hz", [300.0, 1000.0, 2500.0])
def test_pure_tone_peaks_at_its_mel_band(tone_hz: float) -> None:
    config = M.MfccConfig()
    t = np.arange(8000) / 8000.0
    energies = M.log_mel_energies(0.5 * np.sin(2 * np.pi * tone_hz * t), config).mean(axis=0)
    edges = M.mel_to_hz(np.linspace(M.hz_to_mel(20.0), M.hz_to_mel(4000.0), 28))
    assert int(np.argmin(np.abs(edges[1:-1] - tone_hz))) == int(np.argmax(energies))


def test_mfcc_shape_for_one_second() -> None:
    features = M.mfcc(np.random.default_rng(2).normal(size=8000) * 0.1)
    assert features.shape == (32, 13) and np.isfinite(features).all()
    silent = M.mfcc(np.zeros(8000))
    np.testing.assert_allclose(silent[:, 1:], 0.0, atol=1e-9)  # flat log spectrum: only c0
