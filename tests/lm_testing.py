"""Small shared pieces for the LM tests: a tiny moshi LMModel and a fixture tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from moshi.models.lm import LMModel

from e2e_voice.lm.model import build_lm, lm_kwargs
from e2e_voice.lm.tokenizer import SPM_SPECIALS, SentencePieceTokenizer, train_sentencepiece

FIXTURE_TEXT = [
    "It is almost noon, time for lunch.",
    "Of course, tell me what you need.",
    "It is sunny and warm today.",
    "I love music, especially jazz.",
    "The station is two streets to the left.",
    "I am fine, thank you for asking.",
    "Try a simple pasta with tomatoes.",
    "Honey never spoils if you keep it sealed.",
]


def tiny_kwargs(
    n_q: int = 2, card: int = 32, text_card: int = 48, delays: list[int] | None = None, **kw
) -> dict:
    base = dict(
        n_q=n_q,
        card=card,
        text_card=text_card,
        dim=32,
        num_layers=2,
        num_heads=4,
        ff_hidden=64,
        depformer_dim=16,
        depformer_num_layers=1,
        depformer_num_heads=2,
        depformer_ff_hidden=32,
        context=64,
        delays=delays,
        specials=SPM_SPECIALS,
    )
    base.update(kw)
    return lm_kwargs(**base)


def tiny_lm(seed: int = 0, **kw) -> LMModel:
    torch.manual_seed(seed)
    return build_lm(tiny_kwargs(**kw))


def fixture_tokenizer(directory: Path, vocab_size: int = 48) -> SentencePieceTokenizer:
    return SentencePieceTokenizer(
        train_sentencepiece(FIXTURE_TEXT, directory / "tok.model", vocab_size=vocab_size)
    )
