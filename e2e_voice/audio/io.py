"""Read, write and resample audio with clear errors on bad input.

Arrays are float32 in [-1, 1], shaped ``[C, T]`` (channels, samples).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from e2e_voice.constants import SAMPLE_RATE


class AudioError(ValueError):
    """Audio input that cannot be used as it is; the message says what to do."""


def resample(audio: np.ndarray, sr_in: float, sr_out: float) -> np.ndarray:
    """Resample ``[C, T]`` or ``[T]`` float audio from ``sr_in`` to ``sr_out`` Hz (soxr, high quality).

    Rates need not be whole numbers: speed perturbation reads a clip as if sampled at ``factor x 24 kHz``.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise AudioError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    if sr_in == sr_out:
        return audio.astype(np.float32, copy=False)
    if audio.ndim == 1:
        return soxr.resample(audio.astype(np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)
    # soxr wants [T, C]
    return soxr.resample(audio.T.astype(np.float32), sr_in, sr_out, quality="HQ").T.astype(np.float32).copy()


def load_audio(
    path: str | os.PathLike[str], sample_rate: int | None = SAMPLE_RATE, mono: bool = True
) -> np.ndarray:
    """Load an audio file as float32 ``[C, T]``, resampled to ``sample_rate`` (None keeps the file's).

    Args:
        path: any format libsndfile reads (wav, flac, ogg, ...).
        sample_rate: target rate in Hz, default 24 kHz; None keeps the file's rate.
        mono: average the channels into one.

    Raises:
        AudioError: the file is missing, empty, unreadable, has no samples or has non-finite samples.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"audio file {p} does not exist")
    if p.stat().st_size == 0:
        raise AudioError(f"audio file {p} is empty (0 bytes); re-export it")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)  # [T, C]
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"cannot read {p} as audio ({exc}); is it a valid wav/flac/ogg file?") from exc
    if data.shape[0] == 0:
        raise AudioError(f"audio file {p} has no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"audio file {p} contains NaN or infinite samples")
    audio = data.T  # [C, T]
    if mono and audio.shape[0] > 1:
        audio = audio.mean(axis=0, keepdims=True)
    if sample_rate is not None and sr != sample_rate:
        audio = resample(audio, sr, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)


def save_audio(
    path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16"
) -> Path:
    """Write ``[C, T]`` or ``[T]`` float audio atomically (temp file, then rename). Returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(audio, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise AudioError(f"expected audio shaped [C, T] or [T], got {arr.shape}")
    tmp = p.with_name(p.name + ".tmp")
    sf.write(str(tmp), np.clip(arr, -1.0, 1.0).T, sample_rate, subtype=subtype, format=_format_of(p))
    tmp.replace(p)
    return p


def _format_of(p: Path) -> str:
    ext = p.suffix.lower().lstrip(".")
    return {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}.get(ext, "WAV")
