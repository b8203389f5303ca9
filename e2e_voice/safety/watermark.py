"""Imperceptible audio watermarking: Resemble's Perth (PerthNet implicit, default) or Meta's AudioSeal.

PerthNet works on a 32 kHz magnitude spectrogram (2048-point STFT, 10 ms hop, normalised dB): the encoder
adds a learned residual to the bins below 2 kHz in frames that carry energy; the decoder reads a
confidence in [0, 1] from a whole clip. The ``resemble-perth`` package ships the trained weights but runs
them through torchaudio and librosa, which do not import here; this module rebuilds the same network on
``torch.stft``/``torch.istft`` and soxr, and loads the published state dict (parameter names match).

:class:`StreamingWatermarker` marks audio 80 ms at a time with exactly one frame of delay, so the
server and the engine can watermark what they stream. It works with any :class:`Watermarker`; the backend is
picked by name with :func:`load_watermarker` (``watermark.backend`` in the configs): ``perth`` or
``audioseal`` (:mod:`e2e_voice.safety.audioseal_backend`, needs its checkpoint locally).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from e2e_voice.assets.registry import resolve_file
from e2e_voice.audio.io import resample
from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.system import DuplexSystem, SystemOutput

log = logging.getLogger(__name__)

PERTH_RATE = 32_000
N_FFT = 2048
HOP = 320
MIN_MAG = 1e-9
HEADROOM_DB = 15.0
SUBBAND = 128  # bins below 2 kHz at 32 kHz with a 2048-point FFT
HIDDEN = 256
DETECT_THRESHOLD = 0.5


class _ConvAct(nn.Module):
    """Conv1d with 'same' padding, optionally followed by LeakyReLU (named ``conv`` to match the weights)."""

    def __init__(self, cin: int, cout: int, k: int, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, padding=(k - 1) // 2)
        self.act = nn.LeakyReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


def _stack(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        _ConvAct(cin, HIDDEN, 1),
        *[_ConvAct(HIDDEN, HIDDEN, 7) for _ in range(5)],
        _ConvAct(HIDDEN, cout, 1, act=False),
    )


def _energy_mask(mag: torch.Tensor, peak: torch.Tensor | None = None) -> torch.Tensor:
    """Frames whose summed (normalised) magnitude exceeds 5% of the loudest frame: ``[B, 1, T]``."""
    s = mag.sum(dim=1)  # [B, T]
    top = s.max(dim=1).values if peak is None else peak
    return (s > 0.05 * top[:, None]).float()[:, None]


class PerthEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = _stack(SUBBAND, SUBBAND)

    def forward(self, mag: torch.Tensor, peak: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, F, T]`` normalised magnitude -> the watermarked magnitude."""
        out = mag.clone()
        out[:, :SUBBAND] = out[:, :SUBBAND] + self.layers(mag[:, :SUBBAND]) * _energy_mask(mag, peak)
        return out


class PerthDecoder(nn.Module):
    """Three branches read the sub-band at 1.25x, 1x and 0.75x time scale; attention mixes their votes."""

    def __init__(self) -> None:
        super().__init__()
        self.slow_layers = _stack(SUBBAND, 2)
        self.normal_layers = _stack(SUBBAND, 2)
        self.fast_layers = _stack(SUBBAND, 2)

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        mask = _energy_mask(mag.detach())  # [B, 1, T]
        sub = mag[:, :SUBBAND]
        t = sub.shape[-1]
        votes, weights = [], []
        for layers, scale in ((self.slow_layers, 1.25), (self.normal_layers, 1.0), (self.fast_layers, 0.75)):
            x = (
                sub
                if scale == 1.0
                else nn.functional.interpolate(sub, size=int(t * scale), mode="linear", align_corners=True)
            )
            out = layers(x)  # [B, 2, T']
            m = nn.functional.interpolate(mask, size=out.shape[-1], mode="nearest")
            denom = m.sum(dim=2).clamp(min=1.0)
            weights.append((out[:, :1] * m).sum(dim=2) / denom)
            votes.append((out[:, 1:] * m).sum(dim=2) / denom)
        attn = torch.softmax(torch.cat(weights, dim=1), dim=1)
        return (torch.cat(votes, dim=1) * attn).sum(dim=1)  # [B]


def _to_mag_phase(x: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    spec = torch.stft(x, N_FFT, HOP, N_FFT, window=window, center=True, return_complex=True)
    db = 20 * torch.log10(spec.abs().clamp(min=MIN_MAG))
    min_db = 20 * np.log10(MIN_MAG)
    return (db - min_db) / (-min_db + HEADROOM_DB), torch.angle(spec)


def _to_signal(mag: torch.Tensor, phase: torch.Tensor, window: torch.Tensor, length: int) -> torch.Tensor:
    min_db = 20 * np.log10(MIN_MAG)
    db = mag * (-min_db + HEADROOM_DB) + min_db
    spec = (10.0 ** (db / 20).clamp(max=10)) * torch.exp(1j * phase)
    return torch.istft(spec, N_FFT, HOP, N_FFT, window=window, center=True, length=length)


@dataclass
class Detection:
    """A detector's verdict on one signal."""

    confidence: float  # decoder output in [0, 1]
    present: bool


@dataclass
class WindowState:
    """What a stream carries from one window to the next (per stream, never in a state dict)."""

    peak: torch.Tensor | None = None  # Perth: running loudness peak for the energy mask, ``[1]``


class Watermarker(Protocol):
    """What the streaming path, the systems and the detector CLI need from a watermark backend."""

    name: str
    threshold: float

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Return mono ``audio`` (float32 ``[T]``) with a watermark, same length and rate."""
        ...

    def embed_window(self, window: np.ndarray, sample_rate: int, state: WindowState) -> np.ndarray:
        """Watermark one bounded-context window of a stream (``[T]``), updating ``state``."""
        ...

    def confidence(self, audio: np.ndarray, sample_rate: int) -> float:
        """Detector confidence in [0, 1] that ``audio`` carries a watermark."""
        ...

    def detect(self, audio: np.ndarray, sample_rate: int) -> Detection:
        """Confidence and verdict (``confidence >= threshold``)."""
        ...


class PerthWatermarker:
    """Embed and detect Perth watermarks in mono audio of any sample rate.

    Args:
        model_path: the PerthNet checkpoint (default: ``perth-implicit`` from the bundle).
        threshold: confidence above which a watermark counts as present.
    """

    name = "perth"

    def __init__(self, model_path: str | Path | None = None, threshold: float = DETECT_THRESHOLD) -> None:
        path = resolve_file("perth-implicit", model_path)
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
        self.encoder, self.decoder = PerthEncoder().eval(), PerthDecoder().eval()
        self.encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
        self.decoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("decoder.")})
        self.window = torch.hann_window(N_FFT)
        self.threshold = threshold

    @torch.no_grad()
    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Return ``audio`` (float32 ``[T]``) with a watermark, same length and rate."""
        x = np.asarray(audio, np.float32).reshape(-1)
        if x.size == 0:
            return x.copy()
        y = resample(x, sample_rate, PERTH_RATE)
        if y.size <= N_FFT // 2:  # the STFT's reflect padding needs more than half a window
            raise ValueError(
                f"need more than {N_FFT // 2 / PERTH_RATE * 1000:.0f} ms of audio to embed a watermark,"
                f" got {x.size} sample(s) at {sample_rate} Hz"
            )
        mag, phase = _to_mag_phase(torch.from_numpy(y), self.window)
        marked = self.encoder(mag[None])[0]
        out = _to_signal(marked, phase, self.window, len(y)).numpy()
        out = resample(out, PERTH_RATE, sample_rate)
        return _fit(out, len(x))

    @torch.no_grad()
    def confidence(self, audio: np.ndarray, sample_rate: int) -> float:
        """Decoder confidence in [0, 1] that ``audio`` carries a watermark."""
        x = np.asarray(audio, np.float32).reshape(-1)
        if x.size < N_FFT:
            raise ValueError(
                f"need at least {N_FFT / PERTH_RATE * 1000:.0f} ms of audio to detect a watermark"
            )
        y = resample(x, sample_rate, PERTH_RATE)
        mag, _ = _to_mag_phase(torch.from_numpy(y), self.window)
        return float(self.decoder(mag[None]).clamp(0.0, 1.0)[0])

    def detect(self, audio: np.ndarray, sample_rate: int) -> Detection:
        c = self.confidence(audio, sample_rate)
        return Detection(confidence=c, present=c >= self.threshold)

    @torch.no_grad()
    def embed_window(self, window: np.ndarray, sample_rate: int, state: WindowState) -> np.ndarray:
        """Embed in one stream window; the energy mask's loudness reference is the running peak in ``state``,
        since the clip's true peak is not known yet."""
        y = resample(np.asarray(window, np.float32), sample_rate, PERTH_RATE)
        mag, phase = _to_mag_phase(torch.from_numpy(y), self.window)
        frame_peak = mag.sum(dim=0).max()[None]
        state.peak = frame_peak if state.peak is None else torch.maximum(state.peak, frame_peak)
        marked = self.encoder(mag[None], peak=state.peak)[0]
        out = resample(_to_signal(marked, phase, self.window, len(y)).numpy(), PERTH_RATE, sample_rate)
        return _fit(out, len(window))


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    x = x[:n]
    return np.pad(x, (0, n - len(x))).astype(np.float32) if len(x) < n else x.astype(np.float32)


class StreamingWatermarker:
    """Watermark a stream 80 ms at a time, with exactly one frame (80 ms) of delay.

    Each call takes one frame and returns the previous one, watermarked. The backend sees the past
    (``context_frames`` of history) and the one frame of future the delay buys; Perth's convolutions would
    like ~180 ms of future and AudioSeal's SEANet is not causal either, so the mark is computed from a
    slightly shorter view than offline, then the frame before the newest is cut out and returned.

    Args:
        watermarker: a loaded backend (:class:`PerthWatermarker` or ``AudioSealWatermarker``).
        sample_rate: stream rate (24 kHz).
        frame_size: samples per frame (1920).
        context_frames: past frames given to the encoder.
    """

    def __init__(
        self,
        watermarker: Watermarker,
        sample_rate: int = SAMPLE_RATE,
        frame_size: int = FRAME_SIZE,
        context_frames: int = 4,
    ) -> None:
        self.wm, self.sr, self.frame_size, self.context = watermarker, sample_rate, frame_size, context_frames
        self.reset()

    def reset(self) -> None:
        self._history: np.ndarray = np.zeros(0, np.float32)
        self._state = WindowState()
        self._frames_in = 0

    @torch.no_grad()
    def step(self, frame: np.ndarray) -> np.ndarray:
        """Take one frame, return the previous one watermarked (silence for the very first call)."""
        x = np.asarray(frame, np.float32).reshape(-1)
        if x.shape[0] != self.frame_size:
            raise ValueError(f"expected {self.frame_size} samples per frame, got {x.shape[0]}")
        keep = (self.context + 2) * self.frame_size
        self._history = np.concatenate([self._history, x])[-keep:]
        self._frames_in += 1
        if self._frames_in == 1:
            return np.zeros(self.frame_size, np.float32)
        out = self.wm.embed_window(self._history, self.sr, self._state)
        # The frame before the newest one: it has one frame of future context in this window.
        return out[-2 * self.frame_size : -self.frame_size].copy()

    def flush(self) -> np.ndarray:
        """Return the last frame (watermarked) at the end of a stream."""
        return self.step(np.zeros(self.frame_size, np.float32))


class WatermarkedSystem(DuplexSystem):
    """Wrap a system so every audio frame it produces carries a watermark (one frame of added delay).

    Text is delayed by the same frame so it stays aligned with the audio it describes.
    """

    def __init__(self, inner: DuplexSystem, watermarker: Watermarker) -> None:
        self.inner = inner
        self.sample_rate, self.frame_size = inner.sample_rate, inner.frame_size
        self.stream = StreamingWatermarker(watermarker, inner.sample_rate, inner.frame_size)
        self._text = ""

    def reset(self) -> None:
        self.inner.reset()
        self.stream.reset()
        self._text = ""

    def step(self, user_frame: np.ndarray) -> SystemOutput:
        out = self.inner.step(user_frame)
        text, self._text = self._text, out.text
        return SystemOutput(audio=self.stream.step(out.audio), text=text, events=out.events)

    def close(self) -> None:
        self.inner.close()

    def busy(self) -> bool:
        return self.inner.busy()

    def metrics(self) -> list[dict[str, Any]]:
        return self.inner.metrics()


def watermark_system(
    inner: DuplexSystem,
    enabled: bool = True,
    model_path: str | None = None,
    backend: str = "perth",
    **options: Any,
) -> DuplexSystem:
    """Return ``inner`` wrapped with a watermark, or ``inner`` itself (logged) when disabled.

    Args:
        inner: the system whose audio gets marked.
        enabled: ``watermark.enabled``; off is logged as a warning.
        model_path: local checkpoint (file or directory) for the backend; default: the registry's.
        backend: ``"perth"`` or ``"audioseal"``.
        options: backend options (AudioSeal: ``message``, ``alpha``, ``threshold``, ``allow_pickle``).
    """
    if not enabled:
        log.warning("audio watermarking is DISABLED by configuration (watermark.enabled=false)")
        return inner
    return WatermarkedSystem(inner, shared_watermarker(model_path, backend, **options))


def backend_options(watermark_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen backend's option block (``watermark.<backend>``, e.g. ``watermark.audioseal``) as kwargs."""
    backend = str(watermark_cfg.get("backend", "perth"))
    return {str(k): v for k, v in (watermark_cfg.get(backend) or {}).items()}


def _load_perth(model_path: str | None, **options: Any) -> Watermarker:
    return PerthWatermarker(model_path, **options)


def _load_audioseal(model_path: str | None, **options: Any) -> Watermarker:
    from e2e_voice.safety.audioseal_backend import AudioSealWatermarker

    return AudioSealWatermarker(model_path, **options)


BACKENDS: dict[str, Callable[..., Watermarker]] = {"perth": _load_perth, "audioseal": _load_audioseal}


def load_watermarker(backend: str = "perth", model_path: str | None = None, **options: Any) -> Watermarker:
    """Build the watermark backend named ``backend`` (see :data:`BACKENDS`); nothing falls back to another."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown watermark backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    return BACKENDS[backend](model_path, **options)


_WATERMARKERS: dict[tuple[str, str | None, tuple[tuple[str, Any], ...]], Watermarker] = {}


def shared_watermarker(model_path: str | None = None, backend: str = "perth", **options: Any) -> Watermarker:
    """One loaded network per backend, path and options in a process: conversations share it (it holds no
    per-stream state)."""
    key = (backend, model_path, tuple(sorted(options.items())))
    if key not in _WATERMARKERS:
        _WATERMARKERS[key] = load_watermarker(backend, model_path, **options)
    return _WATERMARKERS[key]
