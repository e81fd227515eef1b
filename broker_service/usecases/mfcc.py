"""MFCC features in plain numpy: the keyword use case's front end, small enough to port to a board.

Each step is a pure function so that it can be tested on its own and re-implemented on a device:
pre-emphasis → framing → Hamming window → power spectrum (rfft) → mel filterbank → log →
orthonormal DCT-II. Conventions follow the common speech front end (HTK mel scale, power
spectrum scaled by 1/n_fft, as in python_speech_features); scipy is deliberately not used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class MfccConfig:
    """Every constant of the MFCC front end, so that a device can reproduce the exact features."""

    sample_rate: int = 8000
    frame_length: int = 256
    hop_length: int = 248
    n_fft: int = 256
    n_mels: int = 26
    n_mfcc: int = 13
    fmin: float = 20.0
    fmax: float = 4000.0
    preemphasis: float = 0.97
    log_floor: float = 1e-8

    def to_dict(self) -> dict[str, float | int]:
        """Return the constants as a JSON-able dict (recorded in a use case's preprocessing)."""
        return asdict(self)


def pre_emphasis(signal: np.ndarray, coef: float = 0.97) -> np.ndarray:
    """Return y[0] = x[0], y[t] = x[t] − coef·x[t−1]: a first-order high-pass that lifts the
    high frequencies speech loses in recording."""
    x = np.asarray(signal, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    return np.concatenate([x[:1], x[1:] - coef * x[:-1]])


def frame_signal(signal: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """Cut a 1-D signal into overlapping frames of shape (n_frames, frame_length).

    Only whole frames are kept: n_frames = 1 + (len − frame_length) // hop_length. A signal
    shorter than one frame is zero-padded to a single frame.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.size < frame_length:
        x = np.pad(x, (0, frame_length - x.size))
    n_frames = 1 + (x.size - frame_length) // hop_length
    starts = hop_length * np.arange(n_frames)[:, None]
    return x[starts + np.arange(frame_length)[None, :]]


def power_spectrum(frames: np.ndarray, n_fft: int) -> np.ndarray:
    """Return |rfft(frame · hamming)|² / n_fft for each frame, shape (n_frames, n_fft // 2 + 1)."""
    window = np.hamming(frames.shape[-1])
    spectrum = np.fft.rfft(frames * window, n=n_fft, axis=-1)
    return (np.abs(spectrum) ** 2) / n_fft


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 2595·log10(1 + f/700); 1000 Hz maps to (about) 1000 mel."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular filters equally spaced on the mel scale, shape (n_mels, n_fft // 2 + 1).

    Filter m rises linearly from centre m−1 to centre m and falls to centre m+1, with peak 1;
    weights are evaluated at the exact FFT bin frequencies, so no filter is empty as long as
    one bin falls strictly inside its triangle.
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def dct_matrix(n_in: int, n_out: int | None = None) -> np.ndarray:
    """Orthonormal DCT-II basis, shape (n_out, n_in): row k is cos(π k (2n+1) / (2 n_in)),
    scaled by √(1/n_in) for k = 0 and √(2/n_in) otherwise, so the full square matrix is
    orthogonal."""
    n_out = n_in if n_out is None else n_out
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    basis[0] *= np.sqrt(0.5)
    return basis


def dct2(x: np.ndarray, n_out: int | None = None) -> np.ndarray:
    """Orthonormal DCT-II along the last axis, keeping the first `n_out` coefficients."""
    return np.asarray(x, dtype=np.float64) @ dct_matrix(x.shape[-1], n_out).T


def log_mel_energies(signal: np.ndarray, config: MfccConfig) -> np.ndarray:
    """Pre-emphasis, framing, power spectrum and mel filterbank, then log with a floor."""
    frames = frame_signal(
        pre_emphasis(signal, config.preemphasis), config.frame_length, config.hop_length
    )
    bank = mel_filterbank(config.n_mels, config.n_fft, config.sample_rate, config.fmin, config.fmax)
    energies = power_spectrum(frames, config.n_fft) @ bank.T
    return np.log(np.maximum(energies, config.log_floor))


def mfcc(signal: np.ndarray, config: MfccConfig | None = None) -> np.ndarray:
    """MFCCs of a 1-D signal in [−1, 1], shape (n_frames, n_mfcc), float64."""
    config = MfccConfig() if config is None else config
    return dct2(log_mel_energies(signal, config), config.n_mfcc)


def fix_length(signal: np.ndarray, length: int) -> np.ndarray:
    """Centre-crop or centre-pad (with zeros) a 1-D signal to exactly `length` samples."""
    x = np.asarray(signal)
    if x.size >= length:
        start = (x.size - length) // 2
        return x[start : start + length]
    before = (length - x.size) // 2
    return np.pad(x, (before, length - x.size - before))
