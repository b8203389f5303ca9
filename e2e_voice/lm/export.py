"""Exported LM checkpoints: what a trained model needs to run, without optimizer or RNG state.

An export is a directory::

    model.safetensors   the LM's weights (float16 by default: half the size, cast back on load)
    config.json         {"lm": <the lm config>, "codec_checkpoint": <path relative to this directory>,
                         "tokenizer": "tokenizer.model" | null, "source": {...}}
    tokenizer.model     the sentencepiece model of a tiny LM (absent for smol/moshiko)

It is what gets committed (``checkpoints/lm_tiny``) and what :func:`e2e_voice.engine.load_engine` and
``system=e2e`` accept next to a ``train-lm`` run directory.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from e2e_voice.lm.builders import BuiltLM, build_from_config
from e2e_voice.safetensors_io import save_safetensors

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer.model"


@dataclass
class LoadedExport:
    """An exported LM, built and loaded, with the codec checkpoint it was trained on."""

    built: BuiltLM
    codec_checkpoint: Path | None
    config: dict[str, Any]


def is_export(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an export directory (as opposed to a ``train-lm`` run)."""
    p = Path(path)
    return p.is_dir() and (p / WEIGHTS).is_file() and (p / CONFIG).is_file()


def save_export(
    out_dir: str | os.PathLike[str],
    state: dict[str, torch.Tensor],
    lm_config: dict[str, Any],
    *,
    tokenizer: str | os.PathLike[str] | None,
    codec_checkpoint: str | os.PathLike[str] | None,
    dtype: torch.dtype | None = torch.float16,
    source: dict[str, Any] | None = None,
) -> Path:
    """Write an export directory (each file atomically).

    Args:
        out_dir: the directory to write.
        state: the LM's state dict.
        lm_config: the ``lm`` config it was built from.
        tokenizer: sentencepiece model to copy in (tiny), or None.
        codec_checkpoint: the codec whose codes the LM was trained on; stored relative to ``out_dir``
            so that the pair can move together (e.g. inside a git checkout).
        dtype: dtype of floating weights in the file (None keeps them).
        source: provenance to record (run directory, step, losses).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in state.items()
    }
    save_safetensors(tensors, out / WEIGHTS, {"e2e_voice.weights_dtype": str(dtype or "keep")})
    tok_name = None
    if tokenizer is not None:
        tok_name = TOKENIZER
        if Path(tokenizer).resolve() != (out / TOKENIZER).resolve():
            shutil.copyfile(tokenizer, out / (TOKENIZER + ".tmp"))
            os.replace(out / (TOKENIZER + ".tmp"), out / TOKENIZER)
    codec_rel = None
    if codec_checkpoint is not None:
        codec_rel = os.path.relpath(Path(codec_checkpoint).resolve(), out.resolve())
    config = {"lm": {**lm_config, "tokenizer": None}, "codec_checkpoint": codec_rel, "tokenizer": tok_name}
    config["source"] = source or {}
    (out / (CONFIG + ".tmp")).write_text(json.dumps(config, indent=2) + "\n")
    os.replace(out / (CONFIG + ".tmp"), out / CONFIG)
    return out


def load_export(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedExport:
    """Build the LM of an export directory and load its weights (as float32).

    Raises:
        FileNotFoundError: not an export directory, or its tokenizer is missing.
        ValueError: the weights do not fit the configured architecture.
    """
    p = Path(path)
    if not is_export(p):
        raise FileNotFoundError(f"{p} is not an exported LM (needs {WEIGHTS} and {CONFIG})")
    config = json.loads((p / CONFIG).read_text())
    tok = config.get("tokenizer")
    tok_path = p / tok if tok else None
    if tok_path is not None and not tok_path.is_file():
        raise FileNotFoundError(f"{p}: the tokenizer {tok_path} listed in {CONFIG} is missing")
    built = build_from_config(config["lm"], tokenizer_path=tok_path, device=device)
    with safe_open(str(p / WEIGHTS), framework="pt") as f:
        keys = set(f.keys())
    expected = set(built.model.state_dict())
    if keys != expected:
        raise ValueError(
            f"{p / WEIGHTS} does not fit the architecture in {CONFIG}: "
            f"missing {sorted(expected - keys)[:5]}, unexpected {sorted(keys - expected)[:5]}"
        )
    built.model.load_state_dict(load_file(str(p / WEIGHTS), device=str(device)))  # casts to fp32
    built.model.eval()
    codec = config.get("codec_checkpoint")
    return LoadedExport(built=built, codec_checkpoint=(p / codec).resolve() if codec else None, config=config)
