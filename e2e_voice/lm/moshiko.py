"""``moshiko``: Kyutai's published 7B Moshi LM, from a local checkpoint (or the hub when allowed).

The checkpoint is moshi's format (``model.safetensors`` with ``LMModel`` keys, bf16), loaded through
``moshi.models.loaders.get_moshi_lm`` with the published architecture (``loaders._lm_kwargs``) unless
other kwargs are given (tests write a same-format checkpoint with tiny dimensions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from moshi.models import loaders
from moshi.models.lm import LMModel

from e2e_voice.assets.registry import resolve_file
from e2e_voice.assets.specs import ModelSpec

# Not part of the offline bundle (15 GB); resolved from a local path, the cache, or the hub when allowed.
MOSHIKO = ModelSpec(
    name="moshiko",
    description="Kyutai Moshi 7B LM (moshiko, bf16), moshi's safetensors format (local path or hub only)",
    hub_repo="kyutai/moshiko-pytorch-bf16",
    hub_files=("model.safetensors", "tokenizer_spm_32k_3.model"),
    main_file="model.safetensors",
    in_bundle=False,
)
MOSHIKO_TOKENIZER = "tokenizer_spm_32k_3.model"


def published_lm_kwargs() -> dict[str, Any]:
    """The published 7B architecture (a copy of moshi's ``loaders._lm_kwargs``)."""
    return dict(loaders._lm_kwargs)


def resolve_moshiko(checkpoint: str | Path | None = None) -> Path:
    """``model.safetensors``: ``checkpoint`` (a file or a directory holding it), else the cache/hub."""
    return resolve_file(MOSHIKO.name, checkpoint, specs={MOSHIKO.name: MOSHIKO})


def load_moshiko(
    checkpoint: str | Path | None = None,
    lm_kwargs: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
) -> LMModel:
    """Load the Moshi LM.

    Args:
        checkpoint: ``model.safetensors`` or a directory holding it; None looks in the cache, then
            the hub if ``E2E_VOICE_ALLOW_HUB=1``.
        lm_kwargs: ``LMModel`` kwargs; default the published 7B architecture.
        device: torch device.
        dtype: weights dtype (bf16 as published; fp32 for CPU tests).
    """
    path = resolve_moshiko(checkpoint)
    if path.is_dir():
        path = path / MOSHIKO.main_file  # type: ignore[operator]
    if not path.is_file():
        raise FileNotFoundError(f"moshiko checkpoint {path} not found: pass the path to model.safetensors")
    kwargs = published_lm_kwargs() if lm_kwargs is None else dict(lm_kwargs)
    return loaders.get_moshi_lm(path, lm_kwargs=kwargs, device=device, dtype=dtype)


def moshiko_tokenizer_path(checkpoint: str | Path) -> Path:
    """The sentencepiece model that ships next to the checkpoint."""
    root = Path(checkpoint)
    root = root if root.is_dir() else root.parent
    return root / MOSHIKO_TOKENIZER
