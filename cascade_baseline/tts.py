"""TTS engines behind one surface for the cascade: ``synthesize(text) -> 24 kHz float32``.

The library's engines (:class:`e2e_voice.tts.kokoro.KokoroTTS` at 24 kHz,
:class:`e2e_voice.tts.piper.PiperTTS` at 22.05 kHz, :func:`e2e_voice.tts.espeak.synthesize` at
22.05 kHz) are wrapped, not changed: the cascade
synthesises one phrase at a time (the streaming unit) and resamples to the system rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from e2e_voice.audio.io import resample
from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.tts import espeak


@dataclass
class EspeakTTS:
    """espeak-ng as an engine object (robotic, but ~10 ms per phrase).

    Args:
        voice: espeak-ng voice name.
        words_per_minute: speaking rate.
        pitch: 0-99.
    """

    voice: str = "en-us"
    words_per_minute: int = 165
    pitch: int = 50
    sample_rate: int = 22_050

    def synthesize(self, text: str) -> np.ndarray:
        """Synthesize ``text``; float32 mono at :attr:`sample_rate`."""
        if not text.strip():
            raise ValueError("cannot synthesize empty text")
        audio, sr = espeak.synthesize(text, self.voice, self.words_per_minute, self.pitch)
        self.sample_rate = sr
        return np.asarray(audio, dtype=np.float32).reshape(-1)


class PhraseTTS:
    """Any engine with ``synthesize(text)`` and ``sample_rate``, resampled to ``sample_rate``.

    Args:
        engine: a TTS object (Kokoro, Piper, :class:`EspeakTTS`, or anything with the same two members).
        sample_rate: output rate (the system's 24 kHz).
    """

    def __init__(self, engine: Any, sample_rate: int = SAMPLE_RATE) -> None:
        if not callable(getattr(engine, "synthesize", None)):
            raise TypeError(
                f"cascade.tts must build an object with synthesize(text); got {type(engine).__name__}"
            )
        self.engine = engine
        self.sample_rate = sample_rate

    @property
    def name(self) -> str:
        """Engine class name (for metrics and logs)."""
        return type(self.engine).__name__

    def synthesize(self, text: str) -> np.ndarray:
        """One phrase -> float32 mono audio at :attr:`sample_rate`."""
        audio = np.asarray(self.engine.synthesize(text), dtype=np.float32).reshape(-1)
        sr = int(getattr(self.engine, "sample_rate", self.sample_rate))
        return resample(audio, sr, self.sample_rate) if sr != self.sample_rate else audio
