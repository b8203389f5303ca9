"""Kokoro-82M (v1.0, int8 ONNX) driven from espeak-ng IPA phonemes.

Kokoro was trained on misaki phonemes. Full misaki for English needs a spaCy model download, so we
convert espeak-ng's IPA to misaki's American symbol set instead (diphthongs as single letters, no length
marks, rhotic schwa spelled out); with the bundled voices jm_kumo and jf_gongitsune this reads English
intelligibly (Whisper base WER is measured by the tests).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import numpy as np

from e2e_voice.assets.registry import resolve
from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.tts.espeak import phonemize

ENGLISH_VOICES = ("jm_kumo", "jf_gongitsune")
"""Voice packs of the bundle that read English well from espeak-ng IPA."""

_MAX_PHONEMES = 500  # the model's positional limit (510) minus the boundary tokens, with margin

# Ordered: multi-character sequences before their single-character prefixes.
_ESPEAK_TO_MISAKI = (
    ("\u0361", ""),  # tie bar
    ("\u200d", ""),  # zero-width joiner espeak puts inside diphthongs
    ("ɚɹ", "əɹ"),
    ("ɚ", "əɹ"),
    ("ɜːɹ", "ɜɹ"),
    ("ɜː", "ɜɹ"),
    ("eɪ", "A"),
    ("aɪ", "I"),
    ("ɔɪ", "Y"),
    ("aʊ", "W"),
    ("oʊ", "O"),
    ("əʊ", "O"),
    ("iː", "i"),
    ("uː", "u"),
    ("ɑː", "ɑ"),
    ("ɔː", "ɔ"),
    ("ː", ""),
    ("r", "ɹ"),
    ("ɬ", "l"),
    ("e", "ɛ"),
    ("ɐ", "ə"),
)


def espeak_to_kokoro(ipa: str) -> str:
    """Map espeak-ng IPA to the misaki-style symbols Kokoro was trained on."""
    for src, dst in _ESPEAK_TO_MISAKI:
        ipa = ipa.replace(src, dst)
    return ipa


@dataclass
class KokoroTTS:
    """Kokoro-82M text-to-speech on onnxruntime (CPU by default).

    Args:
        voice: voice pack name (see :attr:`voices`); ``jm_kumo`` and ``jf_gongitsune`` read English well.
        speed: speaking-rate multiplier.
        model_path: explicit model directory; default the bundle's ``kokoro-82m``.
        threads: onnxruntime intra-op threads (default: all cores).
        voice_file: a custom voice pack (``.npy``, shape ``[510, 1, 256]``) the bundle did not ship; it is
            refused unless registered with a consent record (``e2e-voice voices register``).
    """

    voice: str = "jm_kumo"
    speed: float = 1.0
    model_path: str | None = None
    threads: int | None = None
    voice_file: str | None = None
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        import onnxruntime as ort

        directory = resolve("kokoro-82m", self.model_path)
        onnx_path = directory / "kokoro-v1.0.int8.onnx" if directory.is_dir() else directory
        directory = onnx_path.parent
        self.vocab: dict[str, int] = json.loads((directory / "vocab.json").read_text("utf-8"))["vocab"]
        with np.load(directory / "voices.npz") as npz:
            self.voices: dict[str, np.ndarray] = {k: npz[k] for k in npz.files}
        if self.voice_file is not None:
            from e2e_voice.safety.consent import ConsentRegistry

            record = ConsentRegistry().require(self.voice_file)  # raises with how to register
            pack = np.load(self.voice_file).astype(np.float32)
            if pack.ndim == 2:
                pack = pack[:, None, :]
            if pack.ndim != 3 or pack.shape[-1] != 256:
                raise ValueError(
                    f"voice pack {self.voice_file} has shape {pack.shape}, expected [510, 1, 256]"
                )
            self.voice = f"custom:{record.name}"
            self.voices[self.voice] = pack
        if self.voice not in self.voices:
            raise ValueError(
                f"unknown Kokoro voice '{self.voice}'; available: {', '.join(sorted(self.voices))}"
            )
        if self.speed <= 0:
            raise ValueError(f"speed must be positive, got {self.speed}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads or (os.cpu_count() or 1)
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def phonemes(self, text: str) -> str:
        """Kokoro phoneme string of ``text`` (espeak-ng IPA mapped to misaki symbols)."""
        return espeak_to_kokoro(phonemize(text))

    def _chunks(self, phonemes: str) -> list[str]:
        if len(phonemes) <= _MAX_PHONEMES:
            return [phonemes]
        chunks, cur = [], ""
        for piece in re.split(r"(?<=[.,!?;:])\s+", phonemes):
            if cur and len(cur) + len(piece) + 1 > _MAX_PHONEMES:
                chunks.append(cur)
                cur = piece
            else:
                cur = f"{cur} {piece}".strip()
        if cur:
            chunks.append(cur)
        return [c[:_MAX_PHONEMES] for c in chunks]

    def synthesize_phonemes(
        self, phonemes: str, voice: str | None = None, speed: float | None = None
    ) -> np.ndarray:
        """Synthesize a phoneme string; returns float32 mono audio at 24 kHz."""
        style_pack = self.voices[voice or self.voice]
        out = []
        for chunk in self._chunks(phonemes):
            ids = [self.vocab[c] for c in chunk if c in self.vocab]
            if not ids:
                continue
            style = style_pack[min(len(ids), len(style_pack) - 1)].reshape(1, -1).astype(np.float32)
            audio = self.session.run(
                None,
                {
                    "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                    "style": style,
                    "speed": np.array([speed or self.speed], dtype=np.float32),
                },
            )[0]
            out.append(np.asarray(audio, dtype=np.float32).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def synthesize(self, text: str, voice: str | None = None, speed: float | None = None) -> np.ndarray:
        """Synthesize English ``text``; returns float32 mono audio at 24 kHz."""
        if not text.strip():
            raise ValueError("cannot synthesize empty text")
        return self.synthesize_phonemes(self.phonemes(text), voice, speed)
