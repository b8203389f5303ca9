"""Spectral helpers shared by codec training losses and codec metrics (pure torch, no torchaudio).

Shapes: audio ``[B, C, T]`` or ``[B, T]``; spectrograms ``[B, F, N]`` (bins, STFT frames).
"""

from __future__ import annotations

import functools
import math

import torch


def _hz_to_mel(f: float | torch.Tensor) -> float | torch.Tensor:
    return 2595.0 * (
        torch.log10(1.0 + f / 700.0) if isinstance(f, torch.Tensor) else math.log10(1.0 + f / 700.0)
    )


def mel_points_hz(n_points: int, f_max: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n_points`` frequencies (Hz) evenly spaced on the HTK mel scale from 0 to ``f_max``."""
    mel_points = torch.linspace(0.0, float(_hz_to_mel(f_max)), n_points, dtype=dtype)
    return 700.0 * (10 ** (mel_points / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_max: float | None = None) -> torch.Tensor:
    """Triangular HTK-scale mel filters ``[n_mels, n_fft // 2 + 1]`` (area-normalized)."""
    f_max = f_max or sample_rate / 2
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    hz_points = mel_points_hz(n_mels + 2, f_max)
    lower, center, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    up = (freqs[None] - lower) / (center - lower).clamp(min=1e-6)
    down = (upper - freqs[None]) / (upper - center).clamp(min=1e-6)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    return fb * (2.0 / (upper - lower).clamp(min=1e-6))


def stft_magnitude(audio: torch.Tensor, n_fft: int, hop: int | None = None) -> torch.Tensor:
    """Magnitude STFT ``[B, n_fft // 2 + 1, N]`` of ``[B, C, T]`` / ``[B, T]`` audio (channels averaged)."""
    x = audio.mean(dim=1) if audio.dim() == 3 else audio
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop_length=hop or n_fft // 4, window=window, return_complex=True, center=True)
    return spec.abs()


def log_mel(
    audio: torch.Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    n_mels: int = 80,
    hop: int | None = None,
    floor: float = 1e-5,
) -> torch.Tensor:
    """Log10 mel spectrogram ``[B, n_mels, N]``, values below ``floor`` raised to it."""
    mag = stft_magnitude(audio, n_fft, hop)
    fb = mel_filterbank(n_fft, n_mels, sample_rate).to(mag)
    return torch.log10(torch.clamp(fb @ mag, min=floor))


def multiscale_mel_distance(
    reference: torch.Tensor,
    estimate: torch.Tensor,
    sample_rate: int,
    n_ffts: tuple[int, ...] = (256, 512, 1024, 2048),
    n_mels: tuple[int, ...] = (32, 64, 80, 128),
    floor: float = 1e-5,
) -> torch.Tensor:
    """Mean L1 distance of log mel spectrograms over several resolutions (lower is better).

    Mel values below ``floor`` count as ``floor`` in both, so differences beneath it cost nothing. The
    default (1e-5) is the metric every codec result is reported with; on 24 kHz speech the loudest bands
    sit near 1 (log10 ~ 0), so it keeps about 100 dB.
    """
    if len(n_ffts) != len(n_mels):
        raise ValueError(f"n_ffts {n_ffts} and n_mels {n_mels} must have the same length")
    total = reference.new_zeros(())
    for n_fft, mels in zip(n_ffts, n_mels, strict=True):
        a = log_mel(reference, sample_rate, n_fft, mels, floor=floor)
        b = log_mel(estimate, sample_rate, n_fft, mels, floor=floor)
        total = total + (a - b).abs().mean()
    return total / len(n_ffts)
