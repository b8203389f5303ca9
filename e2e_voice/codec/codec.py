"""``MimiCodec``: the codec API the rest of the repo uses, wrapping moshi's ``MimiModel``.

Shape legend: audio ``[B, C, T]`` (24 kHz), codes ``[B, K, T']`` (``frame_rate`` Hz), hidden
``[B, D, T']`` for latents (moshi's conv layout).

Whole clips go through :meth:`MimiCodec.encode` / :meth:`MimiCodec.decode`. Streaming is frame by
frame under ``with codec.streaming(batch_size):`` through :meth:`encode_frame`, :meth:`decode_frame`
or :meth:`step`, each taking exactly one frame (1920 samples = 80 ms at the default 12.5 Hz).

Input handling, documented once here:
- any sample rate: whole clips are resampled (``sample_rate=``); a stream must already be at 24 kHz,
  since resampling 80 ms frames one at a time would need its own state;
- stereo: ``channels="mix"`` (default) averages channels, ``channels="fold"`` folds them into the batch
  (``[B, C, T] -> [B * C, 1, T]``, codes ``[B * C, K, T']``);
- silence is valid input: it encodes to ordinary codes (a trained codec decodes them to near-silence);
- NaN or Inf samples raise ``ValueError`` (they would silently poison every later frame of a stream).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from moshi.models.compression import MimiModel
from moshi.quantization import SplitResidualVectorQuantizer
from safetensors import safe_open
from torch import nn

from e2e_voice.audio.io import resample
from e2e_voice.codec.mimi import ARCH_KEYS, build_mimi
from e2e_voice.codec.stft_layers import SpectralDecoder
from e2e_voice.constants import in_repo
from e2e_voice.safetensors_io import save_safetensors

CHANNEL_MODES = ("mix", "fold")
ARCH_METADATA_KEY = "e2e_voice.codec_arch"
KYUTAI_CHECKPOINT = "tokenizer-e351c8d8-checkpoint125.safetensors"
# The published architecture, what a Kyutai checkpoint without our metadata is assumed to be.
KYUTAI_ARCH: dict[str, Any] = {"n_filters": 64, "transformer_layers": 8, "quantizer_levels": 32}


@dataclass
class CodecOutput:
    """What the training forward returns."""

    audio: torch.Tensor  # [B, 1, T] reconstruction
    codes: torch.Tensor  # [B, K, T'] codes of the levels used in this pass
    commitment: torch.Tensor  # scalar RVQ commitment loss (0 in eval mode)
    semantic: torch.Tensor  # [B, D, T'] output of the first (semantic) quantizer level
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # codebook usage, expiry
    # spectral variant only: the decoder's log-magnitudes then phases [B, 2F, T / hop] before the
    # inverse STFT, which the training losses can supervise directly
    spectrum: torch.Tensor | None = None


def check_finite(audio: torch.Tensor) -> None:
    """Raise a ValueError naming the problem if ``audio`` holds NaN or Inf samples."""
    if not bool(torch.isfinite(audio).all()):
        bad = int((~torch.isfinite(audio)).sum())
        raise ValueError(
            f"audio holds {bad} NaN/Inf samples; clean the input (e.g. torch.nan_to_num) before encoding"
        )


class MimiCodec(nn.Module):
    """A Mimi codec (moshi's ``MimiModel``) with input checks, resampling and a frame API.

    Args:
        model: the moshi model.
        arch: the architecture arguments it was built from (saved with checkpoints).
        channels: ``"mix"`` or ``"fold"``, how multi-channel input is handled.
    """

    def __init__(self, model: MimiModel, arch: dict[str, Any], channels: str = "mix") -> None:
        super().__init__()
        if channels not in CHANNEL_MODES:
            raise ValueError(f"channels must be one of {CHANNEL_MODES}, got {channels!r}")
        self.model = model
        self.arch = dict(arch)
        self.channels = channels
        self._stream_batch: int | None = None

    # ---- properties -------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.model.frame_rate)

    @property
    def frame_size(self) -> int:
        """Samples per code frame (1920 = 80 ms at 24 kHz and 12.5 Hz)."""
        return int(self.model.frame_size)

    @property
    def num_codebooks(self) -> int:
        return int(self.model.num_codebooks)

    @property
    def total_codebooks(self) -> int:
        return int(self.model.total_codebooks)

    @property
    def cardinality(self) -> int:
        return int(self.model.cardinality)

    @property
    def bitrate(self) -> float:
        """Bits per second at the active number of codebooks."""
        return self.num_codebooks * float(np.log2(self.cardinality)) * self.frame_rate

    def set_num_codebooks(self, n: int) -> None:
        """Use the first ``n`` RVQ levels (1 semantic + ``n - 1`` acoustic)."""
        if not 1 <= n <= self.total_codebooks:
            raise ValueError(f"num_codebooks must be in [1, {self.total_codebooks}], got {n}")
        self.model.set_num_codebooks(n)

    # ---- input preparation ------------------------------------------------------------------
    def prepare(self, audio: torch.Tensor | np.ndarray, sample_rate: int | None = None) -> torch.Tensor:
        """Turn ``[T]``, ``[C, T]`` or ``[B, C, T]`` audio at any rate into ``[B', 1, T]`` at 24 kHz."""
        x = torch.as_tensor(audio, dtype=torch.float32)
        if x.dim() == 1:
            x = x[None, None]
        elif x.dim() == 2:
            x = x[None]
        if x.dim() != 3:
            raise ValueError(f"expected audio [T], [C, T] or [B, C, T], got shape {tuple(x.shape)}")
        if x.shape[-1] == 0:
            raise ValueError("cannot encode empty audio (0 samples)")
        check_finite(x)
        sr = self.sample_rate if sample_rate is None else int(sample_rate)
        if sr <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        if sr != self.sample_rate:
            B, C, T = x.shape
            flat = resample(x.reshape(B * C, T).cpu().numpy(), sr, self.sample_rate)
            x = torch.from_numpy(flat).reshape(B, C, -1).to(x.device)
        if self.channels == "mix":
            x = x.mean(dim=1, keepdim=True)
        else:
            x = x.reshape(-1, 1, x.shape[-1])
        return x.to(self._device())

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- whole clips ------------------------------------------------------------------------
    def encode(self, audio: torch.Tensor | np.ndarray, sample_rate: int | None = None) -> torch.Tensor:
        """Encode a whole clip ``[B, C, T]`` to codes ``[B, K, ceil(T / frame_size)]``.

        The end is zero-padded to whole frames. Under ``streaming()`` this is :meth:`encode_frame`.
        """
        if self._stream_batch is not None:
            return self.encode_frame(audio, sample_rate)
        return self.model.encode(self.prepare(audio, sample_rate))

    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Decode codes ``[B, K, T']`` to audio ``[B, 1, T' * frame_size]`` (cropped to ``length``).

        Under ``streaming()`` this is :meth:`decode_frame`.
        """
        if self._stream_batch is not None:
            return self.decode_frame(codes)
        self._check_codes(codes)
        out = self.model.decode(codes)
        return out if length is None else out[..., :length]

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.dim() != 3 or codes.dtype.is_floating_point:
            raise ValueError(f"expected integer codes [B, K, T'], got {codes.dtype} {tuple(codes.shape)}")
        if not 1 <= codes.shape[1] <= self.total_codebooks:
            raise ValueError(f"codes have {codes.shape[1]} levels; this codec has {self.total_codebooks}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cardinality):
            raise ValueError(f"codes must lie in [0, {self.cardinality}), got [{codes.min()}, {codes.max()}]")

    # ---- streaming --------------------------------------------------------------------------
    @contextmanager
    def streaming(self, batch_size: int) -> Iterator[MimiCodec]:
        """Stream ``batch_size`` independent signals frame by frame; state is dropped on exit."""
        if self._stream_batch is not None:
            raise RuntimeError(
                "this codec is already streaming; leave the current `with codec.streaming()` first"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        with self.model.streaming(batch_size):
            self._stream_batch = batch_size
            try:
                yield self
            finally:
                self._stream_batch = None

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Restart the streams where ``mask`` ([B] bool) is set, or all of them."""
        if self._stream_batch is None:
            raise RuntimeError("reset() only makes sense inside `with codec.streaming(batch_size):`")
        self.model.reset_streaming(mask)

    def _check_frame(self, frame: torch.Tensor | np.ndarray, sample_rate: int | None) -> torch.Tensor:
        if self._stream_batch is None:
            raise RuntimeError("encode_frame/decode_frame/step need `with codec.streaming(batch_size):`")
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise ValueError(
                f"streamed audio must be at {self.sample_rate} Hz, got {sample_rate} Hz: resample the stream"
                " before cutting it into frames (e2e_voice.audio.io.resample), or encode() whole clips"
            )
        x = torch.as_tensor(frame, dtype=torch.float32)
        if x.dim() == 1:
            x = x[None, None]
        if x.dim() != 3:
            raise ValueError(
                f"expected one frame [B, C, {self.frame_size}] or [{self.frame_size}], got {tuple(x.shape)}"
            )
        if x.shape[-1] != self.frame_size:
            ms = 1000 * self.frame_size / self.sample_rate
            raise ValueError(
                f"expected {self.frame_size} samples per frame ({ms:g} ms at {self.sample_rate // 1000} kHz),"
                f" got {x.shape[-1]}: buffer input to whole frames"
            )
        check_finite(x)
        x = x.mean(dim=1, keepdim=True) if self.channels == "mix" else x.reshape(-1, 1, x.shape[-1])
        if x.shape[0] != self._stream_batch:
            raise ValueError(
                f"streaming was opened for batch {self._stream_batch}, got a frame of batch {x.shape[0]}"
            )
        return x.to(self._device())

    def encode_frame(self, frame: torch.Tensor | np.ndarray, sample_rate: int | None = None) -> torch.Tensor:
        """Encode exactly one frame ``[B, C, frame_size]`` to codes ``[B, K, 1]``."""
        return self.model.encode(self._check_frame(frame, sample_rate))

    def decode_frame(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode one step of codes ``[B, K, 1]`` to audio ``[B, 1, frame_size]``."""
        if self._stream_batch is None:
            raise RuntimeError("encode_frame/decode_frame/step need `with codec.streaming(batch_size):`")
        self._check_codes(codes)
        if codes.shape[-1] != 1 or codes.shape[0] != self._stream_batch:
            raise ValueError(
                f"expected codes [{self._stream_batch}, K, 1] (one step), got {tuple(codes.shape)}"
            )
        return self.model.decode(codes)

    def step(self, frame: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and decode one frame: returns (codes ``[B, K, 1]``, audio ``[B, 1, frame_size]``)."""
        codes = self.encode_frame(frame)
        return codes, self.decode_frame(codes)

    # ---- training ---------------------------------------------------------------------------
    def forward(self, audio: torch.Tensor) -> CodecOutput:
        """Stateless, time-parallel pass for training; ``audio`` is ``[B, 1, T]``, T whole frames.

        Mirrors ``MimiModel.forward`` but also returns the semantic level's output, which the
        distillation loss needs. In training mode moshi's quantizer updates its EMA codebooks,
        replaces dead codes and returns a commitment loss with a straight-through estimator.
        """
        C, T = audio.shape[1:]  # audio [B, 1, T]
        if C != 1 or T % self.frame_size:
            raise ValueError(
                f"training input must be [B, 1, k * {self.frame_size}], got {tuple(audio.shape)}"
            )
        m = self.model
        emb = m.encoder(audio)
        if m.encoder_transformer is not None:
            (emb,) = m.encoder_transformer(emb)
        emb = m._to_framerate(emb)  # [B, D, T']
        quant: SplitResidualVectorQuantizer = m.quantizer  # type: ignore[assignment]
        first = quant.rvq_first(emb, m.frame_rate)
        latent, codes, commit = first.x, first.codes, first.penalty
        metrics = dict(first.metrics)
        if quant.rvq_rest.num_codebooks > 0:
            rest = quant.rvq_rest(emb, m.frame_rate)
            latent = latent + rest.x
            codes = torch.cat([codes, rest.codes], dim=1)
            n_rest = rest.codes.shape[1]
            commit = (first.penalty + n_rest * rest.penalty) / (1 + n_rest)
            metrics.update(rest.metrics)
        emb = m._to_encoder_framerate(latent)
        if m.decoder_transformer is not None:
            (emb,) = m.decoder_transformer(emb)
        spectrum = None
        if isinstance(m.decoder, SpectralDecoder):
            out, spectrum = m.decoder.decode(emb)
        else:
            out = m.decoder(emb)
        out = out[..., :T]
        return CodecOutput(
            audio=out, codes=codes, commitment=commit, semantic=first.x, metrics=metrics, spectrum=spectrum
        )


# ---- building and checkpoints ---------------------------------------------------------------
def _resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A path, or a registry name (``mimi-kyutai``) resolved local-first through e2e_voice.assets."""
    from e2e_voice.assets.registry import resolve_file
    from e2e_voice.assets.specs import MODELS

    if str(checkpoint) in MODELS:
        return resolve_file(str(checkpoint))
    path = in_repo(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"codec checkpoint {path} not found; pass a safetensors file (ours or Kyutai's"
            f" {KYUTAI_CHECKPOINT}) or 'mimi-kyutai' to use the registry"
        )
    return path


def read_arch(checkpoint: str | Path) -> dict[str, Any] | None:
    """The architecture stored in a checkpoint's metadata, or None (e.g. a Kyutai file)."""
    with safe_open(str(checkpoint), framework="pt") as f:
        meta = f.metadata() or {}
    if ARCH_METADATA_KEY not in meta:
        return None
    arch = json.loads(meta[ARCH_METADATA_KEY])
    if "ratios" in arch:
        arch["ratios"] = tuple(arch["ratios"])
    return dict(arch)


def build_codec(
    num_codebooks: int = 8,
    checkpoint: str | Path | None = None,
    channels: str = "mix",
    device: str = "cpu",
    **arch: Any,
) -> MimiCodec:
    """The Hydra builder: a :class:`MimiCodec` from explicit architecture arguments.

    Args:
        num_codebooks: RVQ levels used by encode/decode.
        checkpoint: None (random weights), a safetensors file in Kyutai's format (ours adds the
            architecture as metadata), or ``"mimi-kyutai"`` to go through the model registry
            (explicit path, cache, then the hub only when ``E2E_VOICE_ALLOW_HUB=1``).
        channels: ``"mix"`` or ``"fold"`` (see the module docstring).
        device: torch device.
        **arch: :func:`e2e_voice.codec.mimi.mimi_config` arguments.
    """
    unknown = set(arch) - set(ARCH_KEYS)
    if unknown:
        raise ValueError(f"unknown codec architecture keys {sorted(unknown)}; known: {list(ARCH_KEYS)}")
    if "ratios" in arch:
        arch["ratios"] = tuple(arch["ratios"])
    path = _resolve_checkpoint(checkpoint) if checkpoint is not None else None
    if path is not None:
        stored = read_arch(path)
        if stored is not None:
            clash = {k: (v, stored[k]) for k, v in arch.items() if k in stored and stored[k] != v}
            if clash:
                raise ValueError(
                    f"checkpoint {path} was trained with a different architecture {clash} (config, file);"
                    " drop those keys from the config or use load_codec(path)"
                )
            arch = {**stored, **arch}
    try:
        model = build_mimi(num_codebooks=num_codebooks, checkpoint=path, device=device, **arch)
    except RuntimeError as e:
        if path is None or "state_dict" not in str(e):
            raise
        raise ValueError(
            f"checkpoint {path} does not fit the architecture {arch}: {str(e).splitlines()[0]}"
            " (a Kyutai file needs the `kyutai` codec config)"
        ) from e
    return MimiCodec(model, arch, channels=channels)


def load_codec(checkpoint: str | Path, num_codebooks: int | None = None, **kwargs: Any) -> MimiCodec:
    """Load a codec from a checkpoint alone.

    Our files carry their architecture as metadata; a file without it is taken to be Kyutai's.
    """
    path = _resolve_checkpoint(checkpoint)
    arch = read_arch(path)
    if arch is None:
        arch = dict(KYUTAI_ARCH)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    n = num_codebooks or int(meta.get("e2e_voice.num_codebooks", 8))
    return build_codec(num_codebooks=n, checkpoint=path, **arch, **kwargs)


def save_codec(
    codec: MimiCodec,
    path: str | Path,
    dtype: torch.dtype | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write the model in Kyutai's format (safetensors of the state dict) plus our metadata, atomically.

    Args:
        codec: the codec to save.
        path: the ``.safetensors`` file.
        dtype: store the learned weights in this dtype (e.g. ``torch.float16`` halves a committed
            checkpoint); buffers such as the RVQ codebooks' running sums stay float32, because
            rounding them moves centroids and changes codes. Loading casts back to the model's dtype.
        weights: write these tensors instead of the codec's own (same keys as ``codec.model``'s
            ``state_dict``), e.g. averaged weights, without loading them into the live model.

    Raises:
        KeyError: ``weights`` lacks or adds keys.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = {name for name, _ in codec.model.named_parameters()}
    own = codec.model.state_dict()
    if weights is not None and set(weights) != set(own):
        raise KeyError(
            f"weights must hold exactly the codec's keys: missing {sorted(set(own) - set(weights))[:5]},"
            f" unexpected {sorted(set(weights) - set(own))[:5]}"
        )
    state = {}
    for k, v in (own if weights is None else weights).items():
        v = v.detach().contiguous().cpu()
        if dtype is not None and k in params and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v
    meta = {
        ARCH_METADATA_KEY: json.dumps(
            {k: list(v) if isinstance(v, tuple) else v for k, v in codec.arch.items()}
        ),
        "e2e_voice.num_codebooks": str(codec.num_codebooks),
        "e2e_voice.weights_dtype": str(dtype or torch.float32).removeprefix("torch."),
    }
    return save_safetensors(state, path, meta)
