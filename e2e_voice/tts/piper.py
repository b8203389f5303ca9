"""Piper (VITS) voices on onnxruntime, phonemized with espeak-ng like Piper itself."""

from __future__ import annotations

import json
import os
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from e2e_voice.assets.registry import resolve
from e2e_voice.tts.espeak import phonemize

_PAD, _BOS, _EOS = "_", "^", "$"
_SEED_LOCK = threading.Lock()  # onnxruntime's seed is process-wide: set it and build a session atomically


@dataclass
class PiperTTS:
    """A Piper voice (default: the bundle's en_US-joe-medium, 22.05 kHz).

    Args:
        model: registry name of the voice.
        model_path: explicit ``.onnx`` file or a directory holding one (with its ``.onnx.json``).
        length_scale: >1 speaks slower.
        noise_scale: variability of the voice (Piper's default 0.667).
        noise_w: variability of phoneme durations (Piper's default 0.8).
        threads: onnxruntime intra-op threads (default: all cores).
    """

    model: str = "piper-en-us-joe"
    model_path: str | None = None
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w: float | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        found = resolve(self.model, self.model_path)
        onnx_path = found if found.is_file() else next(iter(sorted(Path(found).rglob("*.onnx"))))
        config = json.loads(Path(str(onnx_path) + ".json").read_text("utf-8"))
        self.sample_rate: int = int(config["audio"]["sample_rate"])
        self.voice: str = config.get("espeak", {}).get("voice", "en-us")
        self.id_map: dict[str, list[int]] = config["phoneme_id_map"]
        inference = config.get("inference", {})
        self.scales = np.array(
            [
                self.noise_scale if self.noise_scale is not None else inference.get("noise_scale", 0.667),
                self.length_scale if self.length_scale is not None else inference.get("length_scale", 1.0),
                self.noise_w if self.noise_w is not None else inference.get("noise_w", 0.8),
            ],
            dtype=np.float32,
        )
        self._onnx_path = str(onnx_path)
        # Built on the first unseeded call: seeded readings (the corpus builders') never use it.
        self._session: Any = None
        # The model's bytes, read on the first seeded call: each seeded reading builds a session, and
        # building it from memory spares re-reading the file (63 MB for the bundle's voice) every time.
        self._model_bytes: bytes | None = None
        self._multi_speaker = int(config.get("num_speakers", 1)) > 1

    def _new_session(self, seed: int | None = None) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads or (os.cpu_count() or 1)
        if seed is None:
            return ort.InferenceSession(
                self._onnx_path, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        if self._model_bytes is None:
            self._model_bytes = Path(self._onnx_path).read_bytes()
        with _SEED_LOCK:
            # The graph's random ops draw their generator's seed when the session is built.
            ort.set_seed(int(seed))
            return ort.InferenceSession(
                self._model_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
            )

    def _scales(self, length_scale: float | None, noise_scale: float | None) -> np.ndarray:
        """The graph's ``scales`` input (noise, length, noise_w), with one call's overrides."""
        scales = self.scales.copy()
        for i, value, name in ((0, noise_scale, "noise_scale"), (1, length_scale, "length_scale")):
            if value is None:
                continue
            if not value > 0:
                raise ValueError(f"Piper {name} must be positive, got {value}")
            scales[i] = value
        return scales

    def phoneme_ids(self, text: str) -> list[int]:
        """Piper's id sequence: BOS, each phoneme followed by PAD, EOS (unknown symbols dropped)."""
        phonemes = unicodedata.normalize("NFD", phonemize(text, self.voice))
        ids = [*self.id_map[_BOS], *self.id_map[_PAD]]
        for ch in phonemes:
            if ch in self.id_map:
                ids += [*self.id_map[ch], *self.id_map[_PAD]]
        ids += self.id_map[_EOS]
        return ids

    def synthesize(
        self,
        text: str,
        seed: int | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
    ) -> np.ndarray:
        """Synthesize ``text``; returns float32 mono audio at :attr:`sample_rate`.

        Piper samples its prosody inside the ONNX graph (``noise_scale``, ``noise_w``) from a generator that
        onnxruntime seeds when the session is built, so two unseeded calls differ. With ``seed`` the reading
        is a function of (voice, settings, text, seed): the call runs on a session built for it under that
        seed (~0.3 s more on 2 cores), so corpora and evaluation sets repeat from run to run (exactly with
        the same ``threads``; another thread count changes float rounding, ~1e-6, and so may another
        CPU). Setting both noises to 0 also repeats, with flat prosody.

        Args:
            text: what to say.
            seed: 0 to 2**32 - 1 for a repeatable reading; ``None`` samples freshly (the cascade's default).
            length_scale: this reading's speed (>1 slower), instead of the voice's. The scales are inputs
                of the graph, so one voice object reads at any setting.
            noise_scale: this reading's voice variability, instead of the voice's.
        """
        if not text.strip():
            raise ValueError("cannot synthesize empty text")
        ids = self.phoneme_ids(text)
        feeds: dict[str, np.ndarray] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": self._scales(length_scale, noise_scale),
        }
        if self._multi_speaker:
            feeds["sid"] = np.array([0], dtype=np.int64)
        if seed is not None:
            session = self._new_session(seed)
        else:
            if self._session is None:
                self._session = self._new_session()
            session = self._session
        audio = session.run(None, feeds)[0]
        return np.asarray(audio, dtype=np.float32).reshape(-1)
