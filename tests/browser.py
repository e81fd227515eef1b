"""Headless Chromium for tests: a page's screenshot, and whether a screenshot shows anything."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image


def chromium() -> str:
    """The Chromium executable (Debian package `chromium`)."""
    found = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(found).exists(), "chromium not installed: run `make test` (Debian package)"
    return found


def screenshot(page: Path, shot: Path, width: int = 1280, height: int = 2400) -> Image.Image:
    """Render `page` in headless Chromium at width × height and return the screenshot, cropped
    below the last row that is not the page's background."""
    proc = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--user-data-dir=%s" % (shot.parent / "chrome-profile"),
            "--screenshot=%s" % shot,
            "--window-size=%d,%d" % (width, height),
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    pixels = np.asarray(image)
    background = pixels[-1, 0]
    rows = np.nonzero((pixels != background).any(axis=(1, 2)))[0]
    bottom = int(rows[-1]) + 24 if len(rows) else image.height
    return image.crop((0, 0, image.width, min(image.height, bottom)))


def looks_drawn(image: Image.Image) -> tuple[float, int]:
    """(grey-level standard deviation, colours covering at least 0.1 % of the image): a blank
    or single-colour page has a small deviation and one or two colours."""
    pixels = np.asarray(image.convert("RGB"))
    grey = pixels.mean(axis=2)
    quantised = (pixels // 32).reshape(-1, 3)
    _, counts = np.unique(quantised, axis=0, return_counts=True)
    return float(grey.std()), int((counts >= 0.001 * len(quantised)).sum())
