"""Codes on disk, and clips of any length through the codec.

A codes file is a safetensors file holding one int tensor ``codes`` ``[C, K, T']`` (C channels, K RVQ
levels, T' frames) and, as metadata, what is needed to decode it faithfully: the SHA-256 of the codec
file that made it (codes are only meaningful to that codec), the number of 24 kHz samples before the
last frame was padded, and the source's sample rate and name. No pickle, so a codes file from
someone else is safe to open.

Long clips: the codec's whole-clip pass attends over the entire clip at once, so its memory grows
with the square of the clip's length. :func:`encode_audio` and :func:`decode_codes` take the whole-clip
pass up to ``max_whole_seconds`` and stream frame by frame past it, at constant memory and about 5x the
time (``benchmarks/bench_codec_files.py``, committed codec, 2 threads: encoding 5 min took 3.7 s at
1.20 GB peak RSS whole, 18.7 s at 0.35 GB streamed). Streamed and whole-clip latents differ by float
rounding only, so the codes are the same except where two codewords are nearly tied: identical over 60 s
of speech, 7 of 30,000 apart over 5 min.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from e2e_voice.codec.codec import MimiCodec
from e2e_voice.safetensors_io import save_safetensors

CODES_FORMAT = "e2e_voice.codes"
CODES_VERSION = 1
CODES_SUFFIX = ".codes.safetensors"
# Whole-clip passes up to this length; longer clips stream (see the module docstring).
MAX_WHOLE_SECONDS = 300.0


class CodesFileError(ValueError):
    """A file that is not a readable codes file; the message says what it is and what to do."""


@dataclass
class Codes:
    """Codes of one clip and what decoding them needs.

    Attributes:
        codes: ``[C, K, T']`` integer codes (one row per channel: 1 when the channels were mixed).
        num_samples: samples of the clip at the codec's rate, before the end was padded to whole frames.
        sample_rate: the codec's sample rate (decoded audio comes out at it).
        frame_rate: code frames per second.
        cardinality: entries per codebook.
        codec_sha256: SHA-256 of the codec file that made the codes.
        codec: how the codec was named when encoding (a path or a registry name), for the reader.
        source: the encoded file's name.
        source_sample_rate: the encoded file's sample rate.
        channels: ``"mix"`` (channels averaged into one row) or ``"keep"`` (one row per channel).
    """

    codes: torch.Tensor
    num_samples: int
    sample_rate: int
    frame_rate: float
    cardinality: int
    codec_sha256: str
    codec: str = ""
    source: str = ""
    source_sample_rate: int = 0
    channels: str = "mix"

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def num_codebooks(self) -> int:
        return int(self.codes.shape[1])

    @property
    def bitrate(self) -> float:
        """Bits per second of one channel's codes."""
        return self.num_codebooks * float(np.log2(self.cardinality)) * self.frame_rate


def save_codes(path: str | Path, codes: Codes) -> Path:
    """Write ``codes`` to a safetensors codes file, atomically. Returns the path."""
    c = codes.codes
    if c.dim() != 3 or c.dtype.is_floating_point:
        raise ValueError(f"expected integer codes [C, K, T'], got {c.dtype} {tuple(c.shape)}")
    dtype = torch.int16 if codes.cardinality <= 2**15 else torch.int32
    meta = {
        "format": CODES_FORMAT,
        "version": str(CODES_VERSION),
        "num_samples": str(codes.num_samples),
        "sample_rate": str(codes.sample_rate),
        "frame_rate": repr(float(codes.frame_rate)),
        "cardinality": str(codes.cardinality),
        "codec_sha256": codes.codec_sha256,
        "codec": codes.codec,
        "source": codes.source,
        "source_sample_rate": str(codes.source_sample_rate),
        "channels": codes.channels,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_safetensors({"codes": c.detach().cpu().to(dtype).contiguous()}, path, meta)


def load_codes(path: str | Path) -> Codes:
    """Read a codes file written by :func:`save_codes`.

    Raises:
        CodesFileError: the file is missing, not safetensors, or not a codes file (e.g. a codec
            checkpoint), or is from a newer version of this format.
    """
    p = Path(path)
    if not p.is_file():
        raise CodesFileError(f"codes file {p} does not exist")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta: dict[str, Any] = dict(f.metadata() or {})
            names = list(f.keys())
            tensor = f.get_tensor("codes") if "codes" in names else None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CodesFileError(
            f"cannot read {p} as a codes file ({exc}); write one with `e2e-voice codec encode`"
        ) from exc
    if meta.get("format") != CODES_FORMAT or tensor is None:
        what = "a codec checkpoint" if _looks_like_codec(names) else "not a codes file"
        raise CodesFileError(f"{p} is {what}; `e2e-voice codec encode` writes codes files")
    version = int(meta.get("version", "0"))
    if version > CODES_VERSION:
        raise CodesFileError(
            f"{p} is codes format version {version}; this e2e-voice reads up to {CODES_VERSION}: update it"
        )
    return Codes(
        codes=tensor.to(torch.long),
        num_samples=int(meta["num_samples"]),
        sample_rate=int(meta["sample_rate"]),
        frame_rate=float(meta["frame_rate"]),
        cardinality=int(meta["cardinality"]),
        codec_sha256=meta["codec_sha256"],
        codec=meta.get("codec", ""),
        source=meta.get("source", ""),
        source_sample_rate=int(meta.get("source_sample_rate", "0")),
        channels=meta.get("channels", "mix"),
    )


def codes_info(codes: Codes) -> dict[str, Any]:
    """A JSON-friendly summary of a codes file (for ``e2e-voice codec info``)."""
    return {
        "channels": int(codes.codes.shape[0]),
        "channel_mode": codes.channels,
        "codebooks": codes.num_codebooks,
        "frames": int(codes.codes.shape[2]),
        "seconds": round(codes.seconds, 3),
        "frame_rate": codes.frame_rate,
        "cardinality": codes.cardinality,
        "bitrate_bps": round(codes.bitrate * codes.codes.shape[0], 1),
        "codec": codes.codec,
        "codec_sha256": codes.codec_sha256,
        "source": codes.source,
        "source_sample_rate": codes.source_sample_rate,
    }


def _looks_like_codec(names: list[str]) -> bool:
    return any(n.startswith(("encoder.", "decoder.", "quantizer.")) for n in names)


def is_codec_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a safetensors file of a Mimi codec's weights (ours or Kyutai's)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return _looks_like_codec(list(f.keys()))
    except (SafetensorError, OSError, ValueError):
        return False


def codec_info(codec: MimiCodec, path: str | Path, sha256: str) -> dict[str, Any]:
    """A JSON-friendly summary of a codec checkpoint (for ``e2e-voice codec info``).

    What a user needs before encoding with it: rates, RVQ levels and bitrate, the parameter count of
    each part, and the SHA-256 that its codes files will record.
    """
    from e2e_voice.codec.codec import read_arch

    p = Path(path)
    model = codec.model
    parts: dict[str, int] = {}
    for name, child in model.named_children():
        n = sum(t.numel() for t in child.parameters())
        if n:
            parts[name] = n
    with safe_open(str(p), framework="pt") as f:
        names = list(f.keys())  # safe_open is not iterable
        dtypes = sorted({str(f.get_slice(k).get_dtype()) for k in names})
    arch = read_arch(p)
    semantic = getattr(model.quantizer, "n_q_semantic", None)
    per_level = codec.bitrate / codec.num_codebooks  # the property's rate at the active levels
    return {
        "kind": "codec",
        "architecture": "kyutai" if arch is None else arch,
        "sample_rate": codec.sample_rate,
        "frame_rate": codec.frame_rate,
        "frame_size": codec.frame_size,
        "codebooks": codec.total_codebooks,
        "semantic_codebooks": semantic,
        "cardinality": codec.cardinality,
        "bitrate_bps": round(codec.total_codebooks * per_level, 1),
        "bitrate_bps_per_codebook": round(per_level, 1),
        "parameters": sum(parts.values()),
        "parameters_by_part": parts,
        "stored_dtypes": dtypes,
        "file_mb": round(p.stat().st_size / 1e6, 2),
        "sha256": sha256,
    }


def format_info(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2)


@torch.no_grad()
def encode_audio(
    codec: MimiCodec,
    audio: np.ndarray,
    max_whole_seconds: float = MAX_WHOLE_SECONDS,
    progress: bool = False,
) -> torch.Tensor:
    """Encode ``[C, T]`` audio at the codec's rate, each channel on its own, to codes ``[C, K, T']``.

    The end is zero-padded to whole frames, as the whole-clip pass does. Clips longer than
    ``max_whole_seconds`` stream frame by frame (constant memory; the same codes up to float rounding,
    see the module docstring).
    """
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    if x.dim() != 2 or x.shape[-1] == 0:
        raise ValueError(f"expected audio [C, T] with T > 0, got shape {tuple(x.shape)}")
    x = x[:, None, :]  # [C, 1, T]: each channel is its own signal
    if x.shape[-1] <= max_whole_seconds * codec.sample_rate:
        return codec.encode(x).cpu()
    fs = codec.frame_size
    n = -(-x.shape[-1] // fs)
    x = torch.nn.functional.pad(x, (0, n * fs - x.shape[-1]))
    out = []
    with codec.streaming(x.shape[0]):
        for i in tqdm(range(n), unit="frame", desc="encode", disable=not progress, leave=False):
            out.append(codec.encode_frame(x[..., i * fs : (i + 1) * fs]).cpu())
    return torch.cat(out, dim=-1)


@torch.no_grad()
def decode_codes(
    codec: MimiCodec,
    codes: torch.Tensor,
    num_samples: int | None = None,
    max_whole_seconds: float = MAX_WHOLE_SECONDS,
    progress: bool = False,
) -> np.ndarray:
    """Decode codes ``[C, K, T']`` to audio ``[C, T]`` at the codec's rate, cropped to ``num_samples``.

    Longer than ``max_whole_seconds`` of codes stream frame by frame (constant memory).
    """
    if codes.dim() != 3:
        raise ValueError(f"expected codes [C, K, T'], got shape {tuple(codes.shape)}")
    if codes.shape[1] != codec.num_codebooks:
        codec.set_num_codebooks(int(codes.shape[1]))  # raises when the codec has fewer levels
    codes = codes.to(next(codec.parameters()).device)
    steps = codes.shape[-1]
    if steps * codec.frame_size <= max_whole_seconds * codec.sample_rate:
        audio = codec.decode(codes)
    else:
        out = []
        with codec.streaming(codes.shape[0]):
            for t in tqdm(range(steps), unit="frame", desc="decode", disable=not progress, leave=False):
                out.append(codec.decode_frame(codes[..., t : t + 1]).cpu())
        audio = torch.cat(out, dim=-1)
    audio = audio[:, 0, :num_samples] if num_samples is not None else audio[:, 0]
    return audio.float().cpu().numpy()
