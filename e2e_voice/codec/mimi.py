"""Build Mimi codecs of any size from explicit arguments, on moshi's classes.

``build_mimi()`` with default arguments is the published architecture (SEANet 64 filters, ratios
[8, 6, 5, 4], 8-layer transformers of width 512, split RVQ with 2048-entry codebooks).
"""

from __future__ import annotations

from pathlib import Path

import torch
from moshi.models.compression import MimiModel
from moshi.models.loaders import get_mimi

from e2e_voice.constants import FRAME_RATE, SAMPLE_RATE


def mimi_config(
    n_filters: int = 64,
    dimension: int = 512,
    ratios: tuple[int, ...] = (8, 6, 5, 4),
    transformer_layers: int = 8,
    transformer_heads: int = 8,
    transformer_ff: int = 2048,
    transformer_context: int = 250,
    quantizer_dimension: int = 256,
    quantizer_levels: int = 32,
    codebook_size: int = 2048,
) -> dict:
    """The nested config dict moshi's ``get_mimi`` expects, from flat typed arguments."""
    seanet = {
        "channels": 1,
        "dimension": dimension,
        "causal": True,
        "n_filters": n_filters,
        "n_residual_layers": 1,
        "activation": "ELU",
        "compress": 2,
        "dilation_base": 2,
        "disable_norm_outer_blocks": 0,
        "kernel_size": 7,
        "residual_kernel_size": 3,
        "last_kernel_size": 3,
        "norm": "none",
        "pad_mode": "constant",
        "ratios": list(ratios),
        "true_skip": True,
    }
    quantizer = {
        "dimension": quantizer_dimension,
        "n_q": quantizer_levels,
        "bins": codebook_size,
        "input_dimension": dimension,
        "output_dimension": dimension,
    }
    transformer = {
        "d_model": dimension,
        "num_heads": transformer_heads,
        "num_layers": transformer_layers,
        "causal": True,
        "layer_scale": 0.01,
        "context": transformer_context,
        "conv_layout": True,
        "max_period": 10000,
        "gating": "none",
        "norm": "layer_norm",
        "positional_embedding": "rope",
        "dim_feedforward": transformer_ff,
        "input_dimension": dimension,
        "output_dimensions": [dimension],
    }
    return {
        "sample_rate": SAMPLE_RATE,
        "channels": 1,
        "frame_rate": FRAME_RATE,
        "seanet": seanet,
        "quantizer": quantizer,
        "transformer": transformer,
    }


def build_mimi(
    num_codebooks: int = 8,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    **arch: int | tuple[int, ...],
) -> MimiModel:
    """A Mimi codec using ``num_codebooks`` RVQ levels (1 semantic + the rest acoustic).

    Args:
        num_codebooks: levels used for encode/decode (the quantizer holds ``quantizer_levels``).
        checkpoint: safetensors file in Kyutai's format; None leaves the weights random.
        device: torch device.
        **arch: architecture overrides, see :func:`mimi_config`.
    """
    cfg = mimi_config(**arch)  # type: ignore[arg-type]
    if not 1 <= num_codebooks <= cfg["quantizer"]["n_q"]:
        raise ValueError(f"num_codebooks must be in [1, {cfg['quantizer']['n_q']}], got {num_codebooks}")
    model = get_mimi(
        str(checkpoint) if checkpoint else None, cfg, device=torch.device(device), num_codebooks=num_codebooks
    )
    return model.eval()
