"""Keyword audio (Free Spoken Digit Dataset): a device is one speaker saying the digits 0-9.

Recordings are `<data_dir>/fsdd/recordings/{digit}_{speaker}_{index}.wav`, 8 kHz mono 16-bit.
Each clip is centre-cropped or centre-padded to 1 s and turned into 32 frames x 13 MFCCs
(`mfcc.py`), shaped [1, 32, 13] (CHW). Features are standardized per coefficient with the mean
and standard deviation of the *training* speakers only; those constants are recorded in
`preprocessing` so that a device can apply them to its own microphone's features.

Speakers are held out in turn (leave-k-speakers-out, `split_fold`): with the 6 FSDD speakers and
3 folds, fold f tests 2 speakers, validates on the next one and meta-trains on the other 3, so
every speaker is a test speaker in exactly one fold and a validation speaker in one other; a
test or validation voice is never heard in meta-training. Episodes name their speaker as their
unit: confidence intervals are taken over speakers, not over episodes of the same few.
"""

from __future__ import annotations

import functools
import re
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from broker_service.usecases.base import (
    DataMissingError,
    UnitsUseCase,
    per_class_split,
    standardize,
)
from broker_service.usecases.mfcc import MfccConfig, fix_length, mfcc
from device_agent.specs import kws_spec

N_CLASSES = 10
N_FRAMES = 32
EXPECTED = "fsdd/recordings/{digit}_{speaker}_{index}.wav"
_WAV_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")


def default_spec() -> dict:
    """The default MCU-sized CNN on [1, 32, 13] MFCC maps (device_agent.specs.kws_spec)."""
    return kws_spec()


@dataclass(frozen=True)
class Recordings:
    """Raw MFCC features (n, 32, 13) float32 with each clip's digit and speaker."""

    features: np.ndarray
    digits: np.ndarray
    speakers: np.ndarray


class KwsUseCase(UnitsUseCase):
    """Training devices are speakers; fold `fold` holds out its validation and test speakers."""

    FOLDS = 3

    def __init__(self, data_dir: str | Path | None, seed: int = 0, fold: int = 0, shots: int = 5):
        super().__init__(name="kws", metric="accuracy", spec=default_spec(), target=0.65)
        self.unit = "speaker"
        self.config = MfccConfig()
        rec = _cached_recordings(tuple(find_recordings(data_dir)), self.config)
        self.fold = fold
        self.shots = shots
        parts = split_fold(sorted({str(s) for s in rec.speakers}), fold, self.FOLDS)
        x, mean, std = standardize(rec.features, np.isin(rec.speakers, parts[0]))
        self.hold_out(rec.speakers, parts, x[:, None], rec.digits)
        self.preprocessing = {
            "clip_samples": self.config.sample_rate,
            "clip": "centre crop / centre zero-pad to 1 s",
            "mfcc": self.config.to_dict(),
            "mean": mean.tolist(),
            "std": std.tolist(),
            "standardize": "x = (mfcc - mean[coef]) / std[coef], from training speakers only",
        }

    def support_query(
        self, rows: np.ndarray, shots: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """`shots` of the speaker's recordings per digit as support, all its other recordings
        as query, each set shuffled (x [n,1,32,13], y digit)."""
        digits = self.y[rows]
        support, _, query, _ = per_class_split(
            [rows[digits == d] for d in np.unique(digits)], shots, rng
        )
        return support, query

    def split_summary(self) -> dict:
        """The fold and the speakers of each split."""
        return {"fold": self.fold, "folds": self.FOLDS, **self.units}


def find_recordings(data_dir: str | Path | None) -> list[Path]:
    """Return the sorted FSDD wav files under `data_dir` (the folder containing `fsdd/`, or the
    `fsdd/` folder itself). Raises DataMissingError naming the expected path when none is found."""
    if data_dir is None:
        raise DataMissingError(f"kws use case: no data_dir given; expected {EXPECTED} under it")
    root = Path(data_dir)
    candidates = [root / "fsdd" / "recordings", root / "recordings"]
    for folder in candidates:
        files = sorted(p for p in folder.glob("*.wav") if _WAV_NAME.match(p.name))
        if files:
            return files
    raise DataMissingError(
        f"kws use case: expected {EXPECTED} under data_dir {root}"
        f" (looked in {' and '.join(str(c) for c in candidates)})"
    )


@functools.lru_cache(maxsize=2)
def _cached_recordings(files: tuple[Path, ...], config: MfccConfig) -> Recordings:
    """The features of the recordings, computed once per process (every fold shares them)."""
    return load_recordings(list(files), config)


def load_recordings(files: list[Path], config: MfccConfig) -> Recordings:
    """Read each wav, fix it to 1 s and compute its (32, 13) MFCCs."""
    features, digits, speakers = [], [], []
    for path in files:
        digit, speaker = parse_name(path.name)
        signal = fix_length(read_wav(path, config.sample_rate), config.sample_rate)
        features.append(mfcc(signal, config))
        digits.append(digit)
        speakers.append(speaker)
    stacked = np.stack(features).astype(np.float32)
    if stacked.shape[1] != N_FRAMES:
        raise ValueError(f"kws: MFCC config gives {stacked.shape[1]} frames, expected {N_FRAMES}")
    return Recordings(stacked, np.array(digits, dtype=np.int64), np.array(speakers))


def parse_name(name: str) -> tuple[int, str]:
    """Return (digit, speaker) of a `{digit}_{speaker}_{index}.wav` file name."""
    match = _WAV_NAME.match(name)
    if match is None:
        raise ValueError(f"kws: {name!r} is not named {{digit}}_{{speaker}}_{{index}}.wav")
    return int(match.group(1)), match.group(2)


def read_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Read a mono 16-bit PCM wav at `sample_rate` as float32 in [−1, 1)."""
    with wave.open(str(path), "rb") as wav:
        shape = (wav.getframerate(), wav.getnchannels(), wav.getsampwidth())
        if shape != (sample_rate, 1, 2):
            raise ValueError(
                f"kws: {path} is {shape[0]} Hz, {shape[1]} channel(s), {shape[2]}-byte samples;"
                f" expected {sample_rate} Hz mono 16-bit"
            )
        frames = wav.readframes(wav.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def split_fold(names: list[str], fold: int, folds: int) -> tuple[list[str], list[str], list[str]]:
    """(training, validation, test) speakers of one fold of sorted `names`: the test speakers are
    the fold's block of len(names) // folds names, the validation speaker the next name after
    the block (cyclically), the training speakers the rest."""
    if not 0 <= fold < folds:
        raise ValueError(f"kws: fold {fold} is not in 0..{folds - 1}")
    k = len(names) // folds
    if k < 1 or len(names) - k - 1 < 1:
        raise ValueError(f"kws: {len(names)} speakers cannot make {folds} folds with training data")
    test = names[fold * k : (fold + 1) * k]
    validation = [names[((fold + 1) * k) % len(names)]]
    train = [s for s in names if s not in test and s not in validation]
    return train, validation, test
