"""Build Mimi codecs of any size from explicit arguments, on moshi's classes.

``build_mimi()`` with default arguments is the published architecture (SEANet 64 filters, ratios
[8, 6, 5, 4], 8-layer transformers of width 512, split RVQ with 2048-entry codebooks).

Shapes: audio ``[B, C, T]`` at 24 kHz, codes ``[B, K, T']`` at ``frame_rate`` (12.5 Hz by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from moshi.models.compression import MimiModel
from moshi.models.loaders import get_mimi
from moshi.modules.transformer import ProjectedTransformer, RingKVCache, StreamingMultiheadAttention
from moshi.quantization import SplitResidualVectorQuantizer
from safetensors.torch import load_file

from e2e_voice.codec.stft_layers import SpectralDecoder, SpectralEncoder
from e2e_voice.constants import FRAME_RATE, SAMPLE_RATE

# Architecture keys :func:`mimi_config` accepts (the ones a checkpoint's metadata may carry).
ARCH_KEYS = (
    "n_filters",
    "dimension",
    "ratios",
    "transformer_layers",
    "decoder_transformer_layers",
    "transformer_heads",
    "transformer_ff",
    "transformer_context",
    "quantizer_dimension",
    "quantizer_levels",
    "codebook_size",
    "frame_rate",
    "frontend",
    "n_fft",
    "stft_hop",
    "n_mels",
    "envelope_bands",
)
FRONTENDS = ("waveform", "spectral")


def mimi_config(
    n_filters: int = 64,
    dimension: int = 512,
    ratios: tuple[int, ...] = (8, 6, 5, 4),
    transformer_layers: int = 8,
    decoder_transformer_layers: int | None = None,
    transformer_heads: int = 8,
    transformer_ff: int = 2048,
    transformer_context: int = 250,
    quantizer_dimension: int = 256,
    quantizer_levels: int = 32,
    codebook_size: int = 2048,
    frame_rate: float = FRAME_RATE,
    frontend: str = "waveform",
    n_fft: int = 960,
    stft_hop: int = 240,
    n_mels: int = 80,
    envelope_bands: int = 0,
) -> dict:
    """The nested config dict moshi's ``get_mimi`` expects, from flat typed arguments.

    ``frame_rate`` must divide the SEANet rate ``24000 / prod(ratios)`` by an integer: moshi then adds
    a strided causal convolution to go down to it (12.5 Hz from the published 25 Hz), or none at all
    when the two are equal (e.g. ``frame_rate=25`` gives 40 ms frames of 960 samples).

    ``frontend="spectral"`` puts the SEANet stacks on STFT frames (``n_fft``, ``stft_hop``, ``n_mels``; see
    :mod:`e2e_voice.codec.stft_layers`); ``ratios`` then count STFT frames, e.g. ``[2, 2]`` with a hop of
    240 samples gives the same 25 Hz as the published ``[8, 6, 5, 4]`` on samples.

    ``decoder_transformer_layers`` (spectral codecs only) gives the decoder's transformer another depth
    than the encoder's ``transformer_layers``; None keeps them equal, as in Mimi.
    """
    if frontend not in FRONTENDS:
        raise ValueError(f"frontend must be one of {FRONTENDS}, got {frontend!r}")
    if decoder_transformer_layers is not None and (frontend != "spectral" or decoder_transformer_layers < 1):
        raise ValueError(
            f"decoder_transformer_layers={decoder_transformer_layers}: a separate decoder depth needs"
            f" frontend='spectral' (moshi builds the waveform Mimi's two transformers alike) and at least 1"
            f" layer; got frontend={frontend!r}. Set it to null to use transformer_layers for both"
        )
    hop = stft_hop if frontend == "spectral" else 1
    for r in ratios:
        hop *= r
    stride = SAMPLE_RATE / hop / frame_rate
    if stride < 1 or stride != int(stride):
        raise ValueError(
            f"frame_rate {frame_rate} Hz must be the SEANet rate {SAMPLE_RATE / hop:g} Hz"
            f" (ratios {list(ratios)}) divided by a whole number; change ratios or frame_rate"
        )
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
    config = {
        "sample_rate": SAMPLE_RATE,
        "channels": 1,
        "frame_rate": frame_rate,
        "seanet": seanet,
        "quantizer": quantizer,
        "transformer": transformer,
    }
    if frontend == "spectral":
        if n_fft != 4 * stft_hop:
            raise ValueError(
                f"n_fft ({n_fft}) must be 4 x stft_hop ({stft_hop}): the inverse STFT assumes 75% overlap"
            )
        config["spectral"] = {
            "n_fft": n_fft,
            "hop": stft_hop,
            "n_mels": n_mels,
            "envelope_bands": envelope_bands,
        }
        if decoder_transformer_layers is not None:
            config["decoder_transformer"] = {**transformer, "num_layers": decoder_transformer_layers}
    return config


def _build_spectral_mimi(cfg: dict, device: torch.device) -> MimiModel:
    """A ``MimiModel`` with the spectral encoder and decoder (moshi's ``get_mimi`` builds the rest)."""
    spec = cfg["spectral"]
    encoder = SpectralEncoder(cfg["seanet"], spec["n_fft"], spec["hop"], spec["n_mels"])
    decoder = SpectralDecoder(cfg["seanet"], spec["n_fft"], spec["hop"], spec["envelope_bands"])
    model = MimiModel(
        encoder,
        decoder,
        SplitResidualVectorQuantizer(**cfg["quantizer"]),
        channels=cfg["channels"],
        sample_rate=cfg["sample_rate"],
        frame_rate=cfg["frame_rate"],
        encoder_frame_rate=cfg["sample_rate"] / encoder.hop_length,
        causal=True,
        resample_method="conv",
        encoder_transformer=ProjectedTransformer(device=device, **cfg["transformer"]),
        decoder_transformer=ProjectedTransformer(
            device=device, **cfg.get("decoder_transformer", cfg["transformer"])
        ),
    )
    return model.to(device=device)


class _WideRingAttention(StreamingMultiheadAttention):
    """moshi's streaming attention with ``ring_extra`` more key-value slots than its context (see
    :func:`_widen_kv_rings`); everything else, the attention mask included, is moshi's."""

    ring_extra: int = 0

    def _init_streaming_state(self, batch_size: int) -> Any:
        state = super()._init_streaming_state(batch_size)
        ring = state.kv_cache
        if ring is not None and self.ring_extra:
            _, b, heads, capacity, dim = ring.cache.shape
            wider = capacity + self.ring_extra
            state.kv_cache = RingKVCache(
                b, heads, dim, wider, ring.respect_exec_mask, ring.cache.device, ring.cache.dtype
            )
        return state


def _widen_kv_rings(model: MimiModel) -> MimiModel:
    """Make the codec's transformers stream exactly like the whole-clip pass past their attention window.

    moshi's streaming attention keeps a key-value ring of exactly ``context`` steps and writes a call's new
    steps into it before attending. The codec's transformers run at the encoder frame rate (25 Hz for
    Mimi), so one 80 ms frame is 2 steps: once the window is full, the first step of each frame has lost
    the oldest key that the whole-clip mask (``delta < context``) still lets it see, and the latents drift
    by ~1e-3 past 10 s (enough to flip a code where two codewords are nearly tied). A ring of ``context +
    steps_per_frame - 1`` keys holds everything the mask allows; weights and mask are unchanged.
    """
    steps = round(model.encoder_frame_rate / model.frame_rate)
    if steps <= 1:
        return model
    for transformer in (model.encoder_transformer, model.decoder_transformer):
        if transformer is None:
            continue
        for attn in transformer.modules():
            if type(attn) is StreamingMultiheadAttention and attn.context is not None:
                attn.__class__ = _WideRingAttention
                attn.ring_extra = steps - 1  # type: ignore[assignment]
    return model


def build_mimi(
    num_codebooks: int = 8,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    **arch: float | tuple[int, ...],
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
    if "spectral" not in cfg:
        model = get_mimi(
            str(checkpoint) if checkpoint else None,
            cfg,
            device=torch.device(device),
            num_codebooks=num_codebooks,
        )
        return _widen_kv_rings(model).eval()
    model = _build_spectral_mimi(cfg, torch.device(device))
    if checkpoint is not None:
        model.load_state_dict(load_file(str(checkpoint), device=str(device)))
    model.set_num_codebooks(num_codebooks)
    return _widen_kv_rings(model).eval()


@torch.no_grad()
def randomize_codebooks(model: MimiModel, seed: int = 0, scale: float = 0.01) -> MimiModel:
    """Give an untrained model random, initialized codebooks (for tests and benchmarks only).

    A freshly built Mimi has all-zero codebooks, so every frame maps to code 0 and tests of codes would
    pass trivially. This draws each codebook from a Gaussian of std ``scale`` (about the std of an
    untrained model's latents, so nearest-centroid search picks varied entries) with unit usage.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, buf in model.named_buffers():
        if name.endswith("_codebook.embedding_sum"):
            buf.copy_(scale * torch.randn(buf.shape, generator=gen))
        elif name.endswith("_codebook.cluster_usage") or name.endswith("_codebook._initialized"):
            buf.fill_(1.0)
    for module in model.modules():
        if hasattr(module, "_embedding") and hasattr(module, "embedding_sum"):
            module.register_buffer("_embedding", None, persistent=False)  # drop the cached centroids
            module._cached_initialized = False  # type: ignore[assignment]
    return model
