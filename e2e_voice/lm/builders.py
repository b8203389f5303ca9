"""The one place that turns an ``lm`` config (a plain dict from ``configs/lm/*.yaml``) into a model.

Scales: ``tiny`` (from scratch, sentencepiece tokenizer trained on the corpus text), ``smol``
(SmolLM2-135M-Instruct temporal transformer + its tokenizer), ``moshiko`` (Kyutai's 7B checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from moshi.models.lm import LMModel
from moshi.modules.lora import LoRALinear, replace_all_linear_with_lora

from e2e_voice.lm.model import build_lm, lm_kwargs
from e2e_voice.lm.streams import TextSpecials, TextTokenizer, mode_delays
from e2e_voice.lm.tokenizer import SPM_SPECIALS, SentencePieceTokenizer

SCALES = ("tiny", "smol", "moshiko")
ARCH_KEYS = (
    "card",
    "text_card",
    "dim",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "ff_hidden",
    "depformer_dim",
    "depformer_num_layers",
    "depformer_num_heads",
    "depformer_ff_hidden",
    "context",
    "max_period",
    "rope",
    "norm",
    "depformer_weights_per_step",
)


@dataclass
class BuiltLM:
    """A model with what the stream builder and trainer need to feed it."""

    model: LMModel
    tokenizer: TextTokenizer
    specials: TextSpecials
    n_q: int  # audio codebooks per speaker
    delays: list[int]  # per stream, 1 + 2 * n_q
    user_levels: int = 0  # user codebooks the model hears (the rest are fed as "no input"); 0 = all n_q

    def __post_init__(self) -> None:
        self.user_levels = self.user_levels or self.n_q


def delays_from_config(cfg: Mapping[str, Any], n_q: int) -> list[int]:
    """``delays: {mode: dialogue|tts|asr, lag_frames: 25, acoustic: 1}`` -> per-stream delays."""
    d = dict(cfg.get("delays") or {})
    return mode_delays(
        str(d.get("mode", "dialogue")),
        n_q,
        lag_frames=int(d.get("lag_frames", 25)),
        acoustic=int(d.get("acoustic", 1)),
    )


def apply_lora(model: LMModel, rank: int, scaling: float = 2.0) -> int:
    """Replace every linear layer by a LoRA adapter and freeze everything else.

    ``lora_B`` starts at zero so that the adapted model equals the pretrained one at step 0
    (moshi's ``LoRALinear`` leaves it randomly initialised). Returns the trainable parameter count.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    replace_all_linear_with_lora(model, rank, scaling)
    for p in model.parameters():
        p.requires_grad_(False)
    n = 0
    for m in model.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.zeros_(m.lora_B.weight)
            for p in (*m.lora_A.parameters(), *m.lora_B.parameters()):
                p.requires_grad_(True)
                n += p.numel()
    return n


def build_from_config(
    cfg: Mapping[str, Any],
    *,
    tokenizer_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> BuiltLM:
    """Build the LM of an ``lm`` config group.

    Args:
        cfg: the ``lm`` config as a dict (``name`` picks the scale).
        tokenizer_path: sentencepiece model for ``tiny`` (overrides ``cfg["tokenizer"]``).
        device: torch device.
        dtype: parameter dtype (fp32 for training, which autocasts to bf16 on GPU).
    """
    name = cfg.get("name")
    if name not in SCALES:
        raise ValueError(f"lm.name must be one of {SCALES}, got {name!r}")
    n_q = int(cfg["n_q"])
    delays = delays_from_config(cfg, n_q)
    user_levels = _user_levels(cfg, n_q)
    if name == "tiny":
        path = tokenizer_path or cfg.get("tokenizer")
        if not path:
            raise ValueError(
                "the tiny LM needs a sentencepiece tokenizer: set lm.tokenizer=PATH.model "
                "(train-lm trains one on the corpus text when it is missing)"
            )
        tok = SentencePieceTokenizer(path)
        kwargs = {k: cfg[k] for k in ARCH_KEYS if k in cfg and cfg[k] is not None}
        if tok.vocab_size > int(kwargs["text_card"]):
            raise ValueError(
                f"the tokenizer has {tok.vocab_size} pieces but lm.text_card={kwargs['text_card']}: "
                "raise text_card or train a smaller tokenizer"
            )
        model = build_lm(lm_kwargs(n_q=n_q, delays=delays, specials=SPM_SPECIALS, **kwargs), device, dtype)
        built = BuiltLM(model, tok, SPM_SPECIALS, n_q, delays)
    elif name == "smol":
        from e2e_voice.lm.smol import SMOL_SPECIALS, build_smol_lm

        overrides = {
            k: cfg[k]
            for k in (
                "depformer_dim",
                "depformer_num_layers",
                "depformer_num_heads",
                "depformer_ff_hidden",
                "context",
            )
            if k in cfg and cfg[k] is not None
        }
        model, hf_tok = build_smol_lm(
            n_q=n_q,
            card=int(cfg["card"]),
            model_path=cfg.get("init_path"),
            device=device,
            dtype=dtype,
            delays=delays,
            **overrides,
        )
        built = BuiltLM(model, hf_tok, SMOL_SPECIALS, n_q, delays)
    else:
        from e2e_voice.lm.moshiko import (
            load_moshiko,
            moshiko_tokenizer_path,
            published_lm_kwargs,
            resolve_moshiko,
        )

        kwargs = published_lm_kwargs()
        if int(kwargs["dep_q"]) != n_q:
            raise ValueError(f"moshiko predicts {kwargs['dep_q']} codebooks; set lm.n_q={kwargs['dep_q']}")
        kwargs["delays"] = delays
        ckpt = resolve_moshiko(cfg.get("checkpoint"))
        model = load_moshiko(ckpt, kwargs, device=device, dtype=dtype)
        tok = SentencePieceTokenizer(moshiko_tokenizer_path(ckpt))
        specials = TextSpecials(pad_id=int(kwargs["existing_text_padding_id"]), end_pad_id=0)
        built = BuiltLM(model, tok, specials, n_q, delays)
    lora = cfg.get("lora") or {}
    if lora.get("enabled"):
        apply_lora(built.model, int(lora.get("rank", 64)), float(lora.get("scaling", 2.0)))
    built.user_levels = user_levels
    return built


def _user_levels(cfg: Mapping[str, Any], n_q: int) -> int:
    """``lm.user_levels``: how many of the user's codebooks the model hears (null: all ``n_q``).

    Why: the user's acoustic levels carry the voice more than the words; a probe on the committed codec
    named a spoken number on unseen voices in 56 % of clips from the semantic level alone and 19 % from
    all 8 levels, which it overfit. Hidden levels are fed as moshi's "no input" token, in training and
    in the engine alike.
    """
    value = cfg.get("user_levels")
    if value is None:
        return n_q
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= n_q:
        raise ValueError(
            f"lm.user_levels must be an integer from 1 to n_q={n_q} (or null for all), got {value!r}"
        )
    return int(value)
