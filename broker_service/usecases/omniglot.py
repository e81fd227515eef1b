"""Handwritten characters (Omniglot): a device is an N-way task over a few characters.

The folder `omniglot/` holds any of the published archives `images_background*.zip` /
`images_evaluation*.zip` or their extracted folders, laid out as
`<archive>/<alphabet>/<characterNN>/<id>_<drawer>.png`. PNGs are read straight from the zip (no
extraction), downscaled 105x105 → 28x28 with area averaging (antialiased) and inverted so that
strokes are 1.0 and the background 0.0.

Devices are split by alphabet, so a validation or test device never sees a script that
meta-training saw (`split_alphabets`): with an `images_evaluation*` archive, its alphabets are
the test alphabets (the standard background / evaluation split); otherwise the last alphabet in
name order is. Of the remaining alphabets, the last fifth in name order (at least one) are the
validation alphabets and the rest the meta-training alphabets. With only
`images_background_small1` (Balinese, Early_Aramaic, Greek, Korean, Latin) that is Balinese,
Early_Aramaic and Greek for meta-training, Korean for validation and Latin for the test.
Training devices draw their N characters from the meta-training alphabets, new devices from the
validation or the test alphabets.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from broker_service.core.episode import Episode
from broker_service.core.streams import named_stream
from broker_service.usecases.base import (
    TEST,
    VALIDATION,
    DataMissingError,
    UseCase,
    check_split,
    per_class_split,
)
from device_agent.specs import omniglot_spec

IMAGE_SIZE = 28
ARCHIVE_PATTERNS = ("images_background*", "images_evaluation*")
EVALUATION_PREFIX = "images_evaluation"
EXPECTED = "omniglot/images_background*.zip or omniglot/images_evaluation*.zip (or extracted)"
# The use case's own named random stream (core.streams.named_stream): the fleet's tasks.
TASKS_STREAM = 12


def default_spec(ways: int = 5) -> dict:
    """The default MCU-sized CNN (device_agent.specs): about 2k parameters, 54k MACs at 5 ways."""
    return omniglot_spec(ways)


@dataclass(frozen=True)
class CharacterSet:
    """All loaded images (n, 28, 28) float32; character k owns images starts[k]:starts[k]+counts[k],
    is named `alphabet/characterNN` and comes from the archive archives[k]."""

    images: np.ndarray
    names: list[str]
    starts: np.ndarray
    counts: np.ndarray
    archives: list[str]

    def members(self, char: int) -> np.ndarray:
        """Image indices of character `char`."""
        return np.arange(self.starts[char], self.starts[char] + self.counts[char])


class OmniglotUseCase(UseCase):
    """`fleet_size` N-way tasks over the meta-training alphabets; new devices use the validation
    or the test alphabets (module docstring). `tasks[i]` are device i's characters."""

    def __init__(
        self,
        data_dir: str | Path | None,
        seed: int = 0,
        ways: int = 5,
        shots: int = 5,
        query: int | None = None,
        fleet_size: int = 200,
    ):
        super().__init__(name="omniglot", metric="accuracy", spec=default_spec(ways), target=0.45)
        self.chars = load_characters(find_sources(data_dir))
        self.ways, self.shots, self.query, self.seed = ways, shots, query, seed
        self.eval_shots = (shots, 1) if shots != 1 else (1,)
        parts = split_alphabets(self.chars)
        self.alphabets = dict(zip(("train", VALIDATION, TEST), parts, strict=True))
        self.split_chars = {k: _characters_of(self.chars, v) for k, v in self.alphabets.items()}
        self.train_chars = self.split_chars["train"]
        for part, chars in self.split_chars.items():
            _check_sizes(self.chars, part, chars, ways, shots)
        self.tasks = _draw_tasks(self.train_chars, ways, fleet_size, seed)
        self.device_ids = [f"omniglot-{i:03d}" for i in range(fleet_size)]
        self._task_of = dict(zip(self.device_ids, self.tasks, strict=True))
        self.preprocessing = {
            "image_size": [IMAGE_SIZE, IMAGE_SIZE],
            "resize": "box (area average) from 105x105",
            "scale": "x = 1 - pixel / 255 (strokes 1.0, background 0.0)",
            "layout": "CHW",
        }

    def stream(
        self, device_id: str, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return `n` random (image, label) samples of the device's task, drawn with `rng`."""
        if device_id not in self._task_of:
            raise KeyError(f"omniglot: {device_id!r} is not a training device")
        task = self._task_of[device_id]
        labels = rng.integers(0, len(task), n)
        chars = task[labels]
        picks = self.chars.starts[chars] + rng.integers(0, self.chars.counts[chars])
        images = self.chars.images[picks]
        return images[:, None], labels.astype(np.int64)

    def new_device_episodes(
        self, count: int, rng: np.random.Generator, split: str = TEST, shots: int | None = None
    ) -> list[Episode]:
        """Return `count` N-way episodes over the split's alphabets: `shots` support per class
        and `query` (default: all remaining drawers) query images per class, each set
        shuffled. Every episode is its own unit (tasks are drawn independently)."""
        chars = self.split_chars[check_split(split)]
        shots = shots or self.shots
        return [self._episode(self.episode_id(split, i), chars, shots, rng) for i in range(count)]

    def split_summary(self) -> dict:
        """The alphabets of each split, their character counts and, for meta-training, its
        classes (one per character)."""
        out: dict = {
            part: {"alphabets": names, "characters": len(self.split_chars[part])}
            for part, names in self.alphabets.items()
        }
        out["train"]["classes"] = len(self.train_chars)
        return out

    def _episode(
        self, device_id: str, pool: np.ndarray, shots: int, rng: np.random.Generator
    ) -> Episode:
        """An N-way episode: N characters of `pool`, `shots` of each one's drawers as support,
        `query` (None: all) of the others as query; a label is the character's position."""
        chars = rng.choice(pool, self.ways, replace=False)
        members = [self.chars.members(char) for char in chars]
        support, sy, query, qy = per_class_split(members, shots, rng, self.query)
        images = self.chars.images
        return Episode(device_id, images[support][:, None], sy, images[query][:, None], qy)

    def character_names(self, indices: np.ndarray | list[int]) -> list[str]:
        """Return the `alphabet/characterNN` names of character indices (for tests and reports)."""
        return [self.chars.names[i] for i in indices]


def find_sources(data_dir: str | Path | None) -> list[Path]:
    """Return the Omniglot archives (zips) and extracted archive folders under `data_dir`.

    `data_dir` may be the folder containing `omniglot/` or the `omniglot/` folder itself. An
    extracted folder replaces a zip of the same name. Raises DataMissingError when none is found.
    """
    if data_dir is None:
        raise DataMissingError(
            f"omniglot use case: no data_dir given; expected {EXPECTED} under it"
        )
    root = Path(data_dir)
    for folder in (root / "omniglot", root):
        found = _sources_in(folder)
        if found:
            return found
    raise DataMissingError(
        f"omniglot use case: expected {EXPECTED} under data_dir {root}"
        f" (looked in {root / 'omniglot'} and {root})"
    )


def _sources_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    by_name: dict[str, Path] = {}
    for pattern in ARCHIVE_PATTERNS:
        for path in sorted(folder.glob(pattern)):
            if path.suffix.lower() == ".zip" and path.is_file():
                by_name.setdefault(path.stem, path)
            elif path.is_dir():
                by_name[path.name] = path
    return [by_name[name] for name in sorted(by_name)]


def load_characters(sources: list[Path]) -> CharacterSet:
    """Decode every PNG of the sources into one array, grouped by `alphabet/character` name.

    A character present in several sources (e.g. a small archive and the full one) is kept
    once, from the first source that has it.
    """
    groups: dict[str, list[np.ndarray]] = {}
    archive_of: dict[str, str] = {}
    for source in sources:
        seen_here: dict[str, list[np.ndarray]] = {}
        for name, data in _iter_pngs(source):
            seen_here.setdefault(name, []).append(_decode(data))
        for name, images in seen_here.items():
            if name not in groups:
                groups[name] = images
                archive_of[name] = source.stem if source.is_file() else source.name
    if not groups:
        raise DataMissingError("omniglot use case: no PNG images in %s" % [str(s) for s in sources])
    names = sorted(groups)
    images = np.concatenate([np.stack(groups[n]) for n in names]).astype(np.float32)
    counts = np.array([len(groups[n]) for n in names], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return CharacterSet(images, names, starts, counts, [archive_of[n] for n in names])


def _iter_pngs(source: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (alphabet/character, png bytes) for each image of a zip or folder, in sorted order."""
    if source.is_dir():
        for path in sorted(source.glob("*/*/*.png")):
            yield f"{path.parent.parent.name}/{path.parent.name}", path.read_bytes()
        return
    with zipfile.ZipFile(source) as archive:
        for entry in sorted(archive.namelist()):
            parts = entry.split("/")
            if _is_image_entry(parts):
                yield f"{parts[-3]}/{parts[-2]}", archive.read(entry)


def _is_image_entry(parts: list[str]) -> bool:
    """True for `<archive>/<alphabet>/<character>/<file>.png`, skipping macOS resource forks."""
    return (
        len(parts) >= 4
        and parts[-1].lower().endswith(".png")
        and not parts[-1].startswith("._")
        and "__MACOSX" not in parts
    )


def _decode(data: bytes) -> np.ndarray:
    """Decode one PNG, downscale to 28x28 by area averaging and invert to strokes = 1.0."""
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return 1.0 - np.asarray(small, dtype=np.float32) / 255.0


def split_alphabets(chars: CharacterSet) -> tuple[list[str], list[str], list[str]]:
    """(meta-training, validation, test) alphabet names, disjoint and each in name order.

    The test alphabets are those of an `images_evaluation*` archive when one is loaded, else the
    last alphabet in name order; the validation alphabets are the last fifth (at least one) of
    the others; the rest are for meta-training. Raises ValueError with fewer than 3 alphabets.
    """
    alphabet_of = {n.split("/")[0]: a for n, a in zip(chars.names, chars.archives, strict=True)}
    names = sorted(alphabet_of)
    if len(names) < 3:
        raise ValueError("omniglot: %d alphabet(s); the split by alphabet needs 3" % len(names))
    test = [a for a in names if alphabet_of[a].startswith(EVALUATION_PREFIX)]
    if not test or len(test) > len(names) - 2:
        test = names[-1:]
    rest = [a for a in names if a not in test]
    n_val = max(1, len(rest) // 5)
    return rest[:-n_val], rest[-n_val:], test


def _characters_of(chars: CharacterSet, alphabets: list[str]) -> np.ndarray:
    """Sorted indices of the characters of the given alphabets."""
    wanted = set(alphabets)
    return np.array(
        [i for i, n in enumerate(chars.names) if n.split("/")[0] in wanted], dtype=np.int64
    )


def _draw_tasks(train_chars: np.ndarray, ways: int, fleet_size: int, seed: int) -> list[np.ndarray]:
    """Draw the fleet's tasks: each N distinct characters, label = position in the array."""
    rng = named_stream(seed, TASKS_STREAM)
    return [rng.choice(train_chars, ways, replace=False) for _ in range(fleet_size)]


def _check_sizes(
    chars: CharacterSet, part: str, members: np.ndarray, ways: int, shots: int
) -> None:
    """Fail early, with the numbers, when the data cannot make the requested tasks."""
    if len(members) < ways:
        raise ValueError(
            f"omniglot: {ways}-way tasks need {ways} characters in the {part} alphabets,"
            f" have {len(members)}"
        )
    fewest = int(chars.counts.min())
    if fewest <= shots:
        raise ValueError(f"omniglot: {shots} shots leave no query image (fewest drawers: {fewest})")
