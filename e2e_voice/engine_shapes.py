"""Random-weight codecs and LMs at the shapes the engine is benchmarked at (speed does not depend on
the weights): the tiny LM recipe, Kyutai's published 7B Moshi with the published Mimi, and toy versions of
both that run in seconds on a CPU (the GPU check's dry run).

Shared by ``benchmarks/bench_engine.py`` and ``scripts/gpu_check.py`` so that both time the same models.
"""

from __future__ import annotations

from typing import Any

import torch
from moshi.models.lm import LMModel

from e2e_voice.codec.codec import MimiCodec, build_codec
from e2e_voice.codec.mimi import randomize_codebooks
from e2e_voice.lm.model import build_lm, lm_kwargs
from e2e_voice.lm.moshiko import published_lm_kwargs
from e2e_voice.lm.streams import mode_delays
from e2e_voice.lm.tokenizer import SPM_SPECIALS

CODECS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        num_codebooks=4,
        n_filters=16,
        transformer_layers=1,
        quantizer_levels=4,
        codebook_size=256,
        dimension=128,
        transformer_ff=512,
        quantizer_dimension=64,
    ),
    "small": dict(
        num_codebooks=8, n_filters=32, transformer_layers=2, quantizer_levels=8, codebook_size=1024
    ),
    "mimi": dict(num_codebooks=8),  # the published Mimi's architecture (32 levels of 2048, 8 used)
}

# configs/lm/tiny.yaml's temporal and depth transformers; the audio streams follow the codec.
TINY_LM = dict(
    text_card=2000,
    dim=256,
    num_layers=4,
    num_heads=4,
    ff_hidden=672,
    depformer_dim=128,
    depformer_num_layers=2,
    depformer_num_heads=4,
    depformer_ff_hidden=336,
    context=375,
)
TOY_LM = dict(
    text_card=2000,
    dim=32,
    num_layers=1,
    num_heads=2,
    ff_hidden=84,
    depformer_dim=16,
    depformer_num_layers=1,
    depformer_num_heads=2,
    depformer_ff_hidden=42,
    context=375,
)


def random_codec(name: str, device: str | torch.device = "cpu") -> MimiCodec:
    """A codec of :data:`CODECS` with random weights and initialised codebooks, in fp32."""
    torch.manual_seed(0)
    codec = build_codec(**CODECS[name])
    randomize_codebooks(codec.model)
    return codec.to(device)


def scaled_lm_kwargs(codec: MimiCodec, shape: dict[str, Any]) -> dict[str, Any]:
    """``LMModel`` kwargs of a from-scratch LM over ``codec``'s codebooks (one of TINY_LM / TOY_LM)."""
    n_q = codec.num_codebooks
    return lm_kwargs(
        n_q=n_q,
        delays=mode_delays("dialogue", n_q),
        specials=SPM_SPECIALS,
        card=codec.cardinality,
        depformer_weights_per_step=True,
        **shape,
    )


def moshiko_kwargs(toy: bool = False) -> dict[str, Any]:
    """The published 7B architecture, or (``toy``) the same streams and vocabularies at toy widths."""
    kwargs = published_lm_kwargs()
    if toy:
        kwargs.update(
            dim=64,
            num_layers=2,
            num_heads=4,
            depformer_dim=32,
            depformer_num_layers=1,
            depformer_num_heads=2,
            depformer_dim_feedforward=132,
        )
    return kwargs


def engine_parts(
    shape: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[MimiCodec, LMModel]:
    """Codec (fp32) and LM (``dtype``) with random weights for an engine ``shape``.

    Shapes: ``tiny`` (the tiny LM over the small codec's 8 codebooks), ``tiny-tinycodec`` (over the tiny
    codec's 4), ``moshiko`` (7B over the published Mimi), and ``toy``, ``moshiko-toy``: the same streams
    at toy widths, for a CPU dry run in seconds.
    """
    if shape in ("tiny", "tiny-tinycodec", "toy"):
        codec = random_codec("small" if shape == "tiny" else "tiny", device)
        kwargs = scaled_lm_kwargs(codec, TOY_LM if shape == "toy" else TINY_LM)
    elif shape in ("moshiko", "moshiko-toy"):
        codec = random_codec("small" if shape == "moshiko-toy" else "mimi", device)
        kwargs = moshiko_kwargs(toy=shape == "moshiko-toy")
        kwargs["card"] = codec.cardinality  # 2048 for the published pair; the toy's small codec has 1024
    else:
        raise ValueError(f"unknown engine shape {shape!r}: tiny, tiny-tinycodec, toy, moshiko, moshiko-toy")
    torch.manual_seed(0)
    lm = build_lm(kwargs, device, dtype)
    return codec, lm
