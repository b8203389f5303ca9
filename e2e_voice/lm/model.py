"""Builders for moshi's ``LMModel`` at three scales: ``tiny`` (from scratch), ``smol`` (temporal
transformer from SmolLM2-135M-Instruct) and ``moshiko`` (Kyutai's 7B checkpoint).

Shape legend: audio ``[B, C, T]``, codes ``[B, K, T]``, hidden ``[B, T, D]``.

The model sees ``K = 1 + 2 * n_q`` streams (text, assistant audio, user audio) and predicts the text
and the assistant's ``n_q`` codebooks (``dep_q = n_q``): the temporal transformer runs once per
80 ms frame, the small depth transformer ("depformer") once per codebook within the frame.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
from moshi.models.lm import LMModel
from moshi.utils.compile import no_compile

from e2e_voice.lm.streams import DEFAULT_SPECIALS, TextSpecials, stream_delays

NORMS = ("layer_norm", "rms_norm", "rms_norm_f32")
ROPES = ("rope", "rope_concat")


def gated_hidden_scale(dim: int, hidden: int) -> float:
    """The ``hidden_scale`` that makes moshi's SiLU gating use a hidden width of exactly ``hidden``.

    moshi's ``ActivationGating`` derives its width from ``dim_feedforward = int(hidden_scale * dim)``:
    ``21 * dim // 8`` when that equals ``4 * dim``, else ``2 * dim_feedforward // 3``. SmolLM2 needs
    1536 at ``dim = 576``, which ``hidden_scale = 4`` cannot give (it yields 1512).
    """
    ff = math.ceil(3 * hidden / 2)
    if ff == 4 * dim:
        ff += 1
    if 2 * ff // 3 != hidden:
        ff += 1
    if 2 * ff // 3 != hidden or ff == 4 * dim:
        raise ValueError(f"no dim_feedforward gives a gated hidden width of {hidden} at dim {dim}")
    # Half a unit of margin so that int(hidden_scale * dim) == ff despite float rounding.
    return (ff + 0.5) / dim


def lm_kwargs(
    *,
    n_q: int,
    card: int,
    text_card: int,
    dim: int,
    num_layers: int,
    num_heads: int,
    ff_hidden: int,
    depformer_dim: int,
    depformer_num_layers: int,
    depformer_num_heads: int,
    depformer_ff_hidden: int,
    num_kv_heads: int | None = None,
    context: int = 375,
    delays: Sequence[int] | None = None,
    max_period: float = 10_000.0,
    rope: str = "rope",
    norm: str = "rms_norm",
    depformer_weights_per_step: bool = True,
    specials: TextSpecials = DEFAULT_SPECIALS,
) -> dict[str, Any]:
    """The keyword arguments of moshi's ``LMModel`` (the format ``loaders.get_moshi_lm`` takes).

    Args:
        n_q: audio codebooks per speaker (the model sees ``2 * n_q`` audio streams, predicts ``n_q``).
        card: audio codebook size.
        text_card: text vocabulary size.
        dim, num_layers, num_heads: temporal transformer.
        ff_hidden: hidden width of the temporal transformer's SiLU-gated MLP.
        depformer_*: the depth transformer (one step per predicted codebook).
        num_kv_heads: key/value heads (grouped-query attention, moshi's ``kv_repeat``); None = num_heads.
        context: attention window in frames (375 = 30 s).
        delays: per-stream delays (``1 + 2 * n_q``), default Moshi's (see :func:`stream_delays`).
        max_period: rope base (theta).
        rope: ``"rope"`` (interleaved pairs, Moshi) or ``"rope_concat"`` (half split, Llama/HF).
        norm: normalisation layer.
        depformer_weights_per_step: separate depformer weights per codebook, as Moshi.
        specials: text padding / end-of-padding ids.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if rope not in ROPES:
        raise ValueError(f"rope must be one of {ROPES}, got {rope!r}")
    if n_q < 1:
        raise ValueError(f"n_q must be >= 1, got {n_q}")
    if dim % num_heads:
        raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
    kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    if num_heads % kv_heads:
        raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {kv_heads}")
    delays = list(stream_delays(n_q) if delays is None else delays)
    if len(delays) != 1 + 2 * n_q:
        raise ValueError(f"expected 1 + 2 * n_q = {1 + 2 * n_q} delays, got {len(delays)}")
    for ident in (specials.pad_id, specials.end_pad_id):
        if not 0 <= ident < text_card:
            raise ValueError(f"text special id {ident} is outside the text vocabulary [0, {text_card})")
    return {
        "n_q": 2 * n_q,
        "dep_q": n_q,
        "card": card,
        "text_card": text_card,
        "existing_text_padding_id": specials.pad_id,
        "existing_text_end_padding_id": specials.end_pad_id,
        "dim": dim,
        "num_heads": num_heads,
        "num_layers": num_layers,
        "hidden_scale": gated_hidden_scale(dim, ff_hidden),
        "kv_repeat": num_heads // kv_heads,
        "causal": True,
        "layer_scale": None,
        "context": context,
        "max_period": max_period,
        "gating": "silu",
        "norm": norm,
        "positional_embedding": rope,
        "depformer_dim": depformer_dim,
        "depformer_dim_feedforward": int(
            (gated_hidden_scale(depformer_dim, depformer_ff_hidden)) * depformer_dim
        ),
        "depformer_num_heads": depformer_num_heads,
        "depformer_num_layers": depformer_num_layers,
        "depformer_kv_repeat": 1,
        "depformer_layer_scale": None,
        "depformer_multi_linear": True,
        "depformer_context": n_q,
        "depformer_max_period": 10_000.0,
        "depformer_gating": "silu",
        "depformer_pos_emb": "none",
        "depformer_weights_per_step": depformer_weights_per_step,
        "delays": delays,
    }


def build_lm(
    kwargs: dict[str, Any], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LMModel:
    """A randomly initialised ``LMModel`` from :func:`lm_kwargs` output."""
    return LMModel(device=device, dtype=dtype, **kwargs)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def eager_on_cpu(device: str | torch.device) -> contextlib.AbstractContextManager[Any]:
    """Disable moshi's lazy ``torch.compile`` (rope, RMSNorm kernels) on CPU.

    moshi compiles a few small kernels on first use; on CPU that costs ~20 s per process for no
    speed-up at these sizes (its own transformer layers already skip compilation off CUDA).
    """
    return no_compile() if torch.device(device).type != "cuda" else contextlib.nullcontext()
