"""Whisper through transformers (``WhisperForConditionalGeneration``): the second STT backend.

Use it for checkpoints that have no CTranslate2 conversion (fine-tunes saved with ``save_pretrained``)
or on a GPU without CTranslate2. The directory must hold the model, a feature extractor config
(``preprocessor_config.json``) and a tokenizer; :func:`save_processor` writes the last two offline from
a ``tokenizer.json`` such as the one in the bundle's ``whisper-base``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from e2e_voice.assets.registry import resolve
from e2e_voice.audio.io import resample
from e2e_voice.stt.whisper import WHISPER_RATE


def save_processor(directory: str | Path, tokenizer_json: str | Path, num_mel_bins: int = 80) -> None:
    """Write a Whisper feature extractor and tokenizer into ``directory`` without the hub.

    Args:
        directory: target folder (usually the model's ``save_pretrained`` folder).
        tokenizer_json: a Whisper ``tokenizer.json`` (e.g. the bundle's whisper-base has one).
        num_mel_bins: mel bins of the model (80 up to large-v2, 128 for large-v3).
    """
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    WhisperFeatureExtractor(feature_size=num_mel_bins).save_pretrained(directory)
    WhisperTokenizer(tokenizer_file=str(tokenizer_json)).save_pretrained(directory)


@dataclass
class HFWhisperSTT:
    """A transformers Whisper checkpoint directory (``save_pretrained`` layout).

    Args:
        model: registry name, used when ``model_path`` is None.
        model_path: directory with ``config.json``, weights, ``preprocessor_config.json`` and tokenizer.
        language: language token to force (e.g. ``en``), or None to let the model choose.
        max_new_tokens: cap on decoded tokens per utterance.
        dtype: ``float32`` or ``bfloat16``.
    """

    model: str = "whisper-small"
    model_path: str | None = None
    language: str | None = "en"
    max_new_tokens: int = 128
    dtype: str = "float32"
    _model: Any = field(init=False, repr=False, default=None)
    _features: Any = field(init=False, repr=False, default=None)
    _tok: Any = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        import torch
        from transformers import (
            WhisperFeatureExtractor,
            WhisperForConditionalGeneration,
            WhisperTokenizer,
        )

        path = resolve(self.model, self.model_path)
        missing = [n for n in ("config.json", "preprocessor_config.json") if not (path / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{path} is not a transformers Whisper directory (missing {', '.join(missing)}); set"
                " cascade.stt.model_path to a save_pretrained folder"
                " (e2e_voice.stt.hf_whisper.save_processor writes the processor files)"
            )
        self._model = WhisperForConditionalGeneration.from_pretrained(path, dtype=getattr(torch, self.dtype))
        self._model.eval()
        self._features = WhisperFeatureExtractor.from_pretrained(path)
        self._tok = WhisperTokenizer.from_pretrained(path)

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        """Transcribe mono float audio (``[T]`` or ``[1, T]``) at any rate; returns the text."""
        import torch

        mono = np.asarray(audio, dtype=np.float32).reshape(-1)
        if mono.size == 0:
            raise ValueError("cannot transcribe empty audio")
        mono = resample(mono, sample_rate, WHISPER_RATE)
        feats = self._features(mono, sampling_rate=WHISPER_RATE, return_tensors="pt").input_features
        # Prompt tokens are set here rather than through generation_config, which a bare save_pretrained
        # checkpoint lacks: <|startoftranscript|> [<|lang|>] <|transcribe|> <|notimestamps|>.
        prompt = ["<|startoftranscript|>"]
        if self.language:
            prompt.append(f"<|{self.language}|>")
        prompt += ["<|transcribe|>", "<|notimestamps|>"]
        ids = self._tok.convert_tokens_to_ids(prompt)
        if any(i is None or i == self._tok.unk_token_id for i in ids):
            raise ValueError(f"tokenizer lacks Whisper prompt tokens {prompt}; check cascade.stt.language")
        decoder_input_ids = torch.tensor([ids])
        eos = self._tok.convert_tokens_to_ids("<|endoftext|>")
        with torch.inference_mode():
            out = self._model.generate(
                feats.to(self._model.dtype),
                decoder_input_ids=decoder_input_ids,
                max_new_tokens=self.max_new_tokens,
                eos_token_id=eos,
                pad_token_id=eos,
                do_sample=False,
            )
        return str(self._tok.decode(out[0, len(ids) :], skip_special_tokens=True)).strip()
