"""Loudness helpers for generated speech."""

from __future__ import annotations

import numpy as np


def set_speech_level(audio: np.ndarray, dbfs: float, peak: float = 0.99, floor: float = 1e-3) -> np.ndarray:
    """Scale ``audio`` so its speech-active RMS is ``dbfs`` dB full scale, keeping the peak at most ``peak``.

    Only samples above ``floor`` count towards the RMS, so that pauses do not skew the level.

    Raises:
        ValueError: the audio is silent (nothing to scale).
    """
    top = float(np.abs(audio).max()) if audio.size else 0.0
    if top == 0.0:
        raise ValueError("cannot set the level of silent audio")
    active = audio[np.abs(audio) > floor]
    rms = float(np.sqrt(np.mean(active**2))) if active.size else top
    gain = 10 ** (dbfs / 20) / rms
    return (audio * min(gain, peak / top)).astype(np.float32)
