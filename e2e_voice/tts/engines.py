"""One way to ask any TTS engine for 24 kHz speech: a voice spec and a plain-dict engine registry.

A :class:`VoiceSpec` names an engine, a voice and its prosody knobs; :func:`synthesize` returns mono
float32 audio at 24 kHz whatever the engine's native rate. Model-backed engines (Kokoro, Piper) are
loaded once per process and voice. Every reading repeats from run to run: Piper, which samples
its prosody, is seeded by voice and text (:func:`reading_seed`), so a corpus or evaluation set built from
specs and texts is rebuilt byte for byte (checked on one machine type and thread count; other CPUs may
round differently).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from e2e_voice.audio.io import resample
from e2e_voice.constants import SAMPLE_RATE


@dataclass(frozen=True)
class VoiceSpec:
    """A concrete voice.

    Args:
        engine: a key of :data:`ENGINES` (``espeak``, ``flite``, ``festival``, ``piper``, ``kokoro``).
        voice: the engine's voice name (espeak ``en-us+f2``, flite ``slt``, festival ``kal_diphone``,
            piper registry name ``piper-en-us-joe``, kokoro pack ``jm_kumo``).
        rate: speaking-rate multiplier (>1 is faster).
        pitch: engine pitch: espeak 0-99, flite mean f0 in Hz; ignored by the others.
        noise: Piper ``noise_scale`` (voice variability); ignored by the others.
    """

    engine: str
    voice: str
    rate: float = 1.0
    pitch: float | None = None
    noise: float | None = None

    def key(self) -> str:
        """Stable short id of this voice and its parameters (used in cache keys)."""
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """Readable summary for manifests, e.g. ``espeak:en-us+f2 rate=1.05 pitch=60``."""
        parts = [f"{self.engine}:{self.voice}", f"rate={self.rate:.2f}"]
        if self.pitch is not None:
            parts.append(f"pitch={self.pitch:.0f}")
        if self.noise is not None:
            parts.append(f"noise={self.noise:.2f}")
        return " ".join(parts)


_MODELS: dict[tuple[Any, ...], Any] = {}


def _espeak(spec: VoiceSpec, text: str) -> tuple[np.ndarray, int]:
    from e2e_voice.tts import espeak

    pitch = 50 if spec.pitch is None else round(spec.pitch)
    return espeak.synthesize(text, spec.voice, words_per_minute=round(165 * spec.rate), pitch=pitch)


def _flite(spec: VoiceSpec, text: str) -> tuple[np.ndarray, int]:
    from e2e_voice.tts import flite

    return flite.synthesize(text, spec.voice, duration_stretch=1.0 / spec.rate, f0_mean=spec.pitch)


def _festival(spec: VoiceSpec, text: str) -> tuple[np.ndarray, int]:
    from e2e_voice.tts import festival

    return festival.synthesize(text, spec.voice, duration_stretch=1.0 / spec.rate)


def _piper(spec: VoiceSpec, text: str) -> tuple[np.ndarray, int]:
    from e2e_voice.tts.piper import PiperTTS

    # One object per voice: speed and noise are inputs of Piper's graph, set per reading (a corpus draws
    # them per conversation, and an object per setting held one model per conversation).
    key = ("piper", spec.voice, _THREADS[0])
    if key not in _MODELS:
        _MODELS[key] = PiperTTS(model=spec.voice, threads=_THREADS[0])
    tts = _MODELS[key]
    # Seeded by voice + text, so a reading is the same in every run (as the other engines' are), and the
    # synthetic corpus and the codec evaluation set can be regenerated exactly.
    audio = tts.synthesize(
        text, seed=reading_seed(spec, text), length_scale=1.0 / spec.rate, noise_scale=spec.noise
    )
    return audio, int(tts.sample_rate)


SEEDED_READINGS = "piper-seeded-by-voice-and-text"
"""Names how readings are drawn, for caches of synthesized clips: Piper clips cached before its readings
were seeded (2026-12-01) were random, and a cache that keys or tags its clips with this does not reuse
them (synth-data's clip cache, the codec evaluation set)."""


def reading_seed(spec: VoiceSpec, text: str) -> int:
    """A 32-bit seed for one reading of ``text`` by ``spec`` (engines that sample their prosody use it)."""
    return int.from_bytes(hashlib.sha256(f"{spec.key()}|{text}".encode()).digest()[:4], "little")


def _kokoro(spec: VoiceSpec, text: str) -> tuple[np.ndarray, int]:
    from e2e_voice.tts.kokoro import KokoroTTS

    key = ("kokoro", _THREADS[0])
    if key not in _MODELS:
        _MODELS[key] = KokoroTTS(voice=spec.voice, threads=_THREADS[0])
    return _MODELS[key].synthesize(text, voice=spec.voice, speed=spec.rate), SAMPLE_RATE


ENGINES: dict[str, Callable[[VoiceSpec, str], tuple[np.ndarray, int]]] = {
    "espeak": _espeak,
    "flite": _flite,
    "festival": _festival,
    "piper": _piper,
    "kokoro": _kokoro,
}
"""Engine name -> function(spec, text) returning (audio, native sample rate)."""

_THREADS: list[int | None] = [None]


def set_threads(threads: int | None) -> None:
    """CPU threads for model-backed engines loaded after this call (None: all cores)."""
    _THREADS[0] = threads


def synthesize(spec: VoiceSpec, text: str) -> np.ndarray:
    """Speak ``text`` with ``spec``; returns float32 mono audio ``[T]`` at 24 kHz."""
    if spec.engine not in ENGINES:
        raise ValueError(f"unknown TTS engine '{spec.engine}'; available: {', '.join(ENGINES)}")
    if spec.rate <= 0:
        raise ValueError(f"voice rate must be positive, got {spec.rate} for {spec.describe()}")
    audio, sr = ENGINES[spec.engine](spec, text)
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    return resample(audio, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else audio
