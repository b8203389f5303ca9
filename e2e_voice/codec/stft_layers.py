"""Spectral front and back ends for a Mimi whose SEANet runs on STFT frames instead of samples.

The ``spectral`` codec variant (``frontend: spectral`` in a codec config) keeps Mimi's structure and
moshi's classes -- SEANet conv stacks, causal transformers, split RVQ, ``MimiModel`` -- but moves the
first and last stage of the waveform SEANet into fixed transforms:

- encoder: a causal STFT (a strided conv whose fixed kernels are the windowed DFT basis), log-mel
  magnitudes, then a small SEANet encoder at the STFT hop rate (100 Hz by default);
- decoder: a small SEANet decoder at the hop rate predicting log-magnitude and phase per bin, then an
  inverse STFT written as a strided transposed conv with fixed kernels, i.e. overlap-add (as Vocos).

Why: on two CPU cores, a waveform SEANet with 16 filters did not learn to reconstruct speech in an
hour: its mel loss stalled at ~0.82-0.87 for 1500 steps of the previous recipe, and sat at ~0.88-0.90
for 300 steps with or without quantization. The same model on log-mel frames reached 0.57 in 300
steps; swapping only the decoder for the inverse STFT changed nothing, so learning the analysis
filterbank from samples is what the small model could not afford.

Both transforms are causal and stream through moshi's ``StreamingConv1d`` / ``StreamingConvTranspose1d``
state (left context of ``n_fft - hop`` samples in; the overlap-add tail out), so one 80 ms frame in
gives one 80 ms frame out with no added latency, and streaming equals whole-clip processing. The
fixed kernels are non-persistent buffers: they are not trained, not saved, and not rounded when a
checkpoint is exported in float16.

Shapes: audio ``[B, 1, T]``; STFT frames ``[B, 2F, N]`` (real parts then imaginary parts, ``F =
n_fft // 2 + 1`` bins, ``N = T / hop``); mel ``[B, n_mels, N]``; hidden ``[B, D, T']``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from moshi.modules.conv import StreamingConv1d, StreamingConvTranspose1d
from moshi.modules.seanet import SEANetDecoder, SEANetEncoder
from moshi.modules.streaming import StreamingContainer
from torch import nn

from e2e_voice.codec.spectral import mel_filterbank, mel_points_hz
from e2e_voice.constants import SAMPLE_RATE

# Log-magnitude ceiling of the decoder's spectra (exp(7) ~ 1100, far above speech at full scale):
# keeps an untrained or diverging decoder from overflowing.
MAX_LOG_MAGNITUDE = 7.0


def _dft_basis(n_fft: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cos, sin, periodic Hann window) with cos/sin ``[F, n_fft]``."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    angle = 2 * math.pi * k[:, None] * n[None] / n_fft
    return torch.cos(angle), torch.sin(angle), torch.hann_window(n_fft, periodic=True, dtype=torch.float64)


def _freeze_kernel(conv: nn.Module, kernel: torch.Tensor) -> None:
    """Replace a conv's weight parameter by a fixed, non-persistent buffer.

    The conv keeps a frozen all-zero bias: moshi's streaming convs read their dtype and device from
    their first parameter, so they need one.
    """
    del conv.weight
    conv.register_buffer("weight", kernel.float().contiguous(), persistent=False)
    conv.bias = nn.Parameter(torch.zeros(kernel.shape[0] if isinstance(conv, nn.Conv1d) else kernel.shape[1]))
    conv.bias.requires_grad_(False)


class CausalSTFT(StreamingContainer):
    """Complex STFT of ``[B, 1, T]`` audio as ``[B, 2F, T / hop]``; frame ``j`` ends at sample ``(j+1)*hop``.

    In training mode, outside streaming, it computes the same frames by FFT (``fft_training``, see
    :meth:`_fft`).

    Args:
        n_fft: window length (a multiple of ``hop``).
        hop: hop length; ``T`` must be a multiple of it.
    """

    fft_training: bool = True  # False: the conv in training too (benchmarks/bench_codec_train.py compares)

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        if n_fft % hop:
            raise ValueError(f"n_fft {n_fft} must be a multiple of the hop {hop}")
        self.n_fft, self.hop = n_fft, hop
        self.conv = StreamingConv1d(1, 2 * (n_fft // 2 + 1), n_fft, hop, causal=True, pad_mode="constant")
        cos, sin, window = _dft_basis(n_fft)
        _freeze_kernel(self.conv.conv.conv, torch.cat([cos * window, -sin * window])[:, None, :])
        self.window: torch.Tensor
        self.register_buffer("window", window.float(), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        whole = not self.is_streaming and audio.shape[1] == 1 and audio.shape[-1] % self.hop == 0
        if self.fft_training and self.training and whole:
            return self._fft(audio)
        return self.conv(audio)

    def _fft(self, audio: torch.Tensor) -> torch.Tensor:
        """The same frames by FFT, for training: the strided conv costs ~10 ms of a CPU recipe's step.

        Inference keeps the conv, so that whole clips and streamed frames share one computation and
        give the same codes (the two paths differ by float rounding, ~1e-6).
        """
        x = F.pad(audio[:, 0], (self.n_fft - self.hop, 0))  # the conv's causal left padding
        window = self.window.to(x)
        spec = torch.stft(x, self.n_fft, self.hop, window=window, center=False, return_complex=True)
        return torch.cat([spec.real, spec.imag], dim=1)


class CausalISTFT(StreamingContainer):
    """Overlap-add inverse of :class:`CausalSTFT`: ``[B, 2F, N]`` -> ``[B, 1, N * hop]``.

    Frame ``j`` is windowed and added at samples ``[j*hop, j*hop + n_fft)``; output sample ``s`` is final
    once the frame containing it first is in, which keeps the module causal. With the periodic Hann
    window and ``hop = n_fft / 4`` the summed squared windows are constant, folded into the kernel.
    In training mode, outside streaming, it runs by inverse FFT (``fft_training``, see :meth:`_fft`).
    """

    fft_training: bool = True  # False: the conv in training too (benchmarks/bench_codec_train.py compares)

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        if n_fft % hop:
            raise ValueError(f"n_fft {n_fft} must be a multiple of the hop {hop}")
        self.n_fft, self.hop = n_fft, hop
        bins = n_fft // 2 + 1
        self.conv = StreamingConvTranspose1d(2 * bins, 1, n_fft, hop, causal=True)
        cos, sin, window = _dft_basis(n_fft)
        weight = torch.full((bins, 1), 2.0, dtype=torch.float64)  # one-sided spectrum: double inner bins
        weight[0] = 1.0
        if n_fft % 2 == 0:
            weight[-1] = 1.0
        overlap = (window**2).sum() / hop  # the constant sum of squared windows under overlap-add
        scale = weight * window / (n_fft * overlap)
        _freeze_kernel(self.conv.convtr.convtr, torch.cat([cos * scale, -sin * scale])[:, None, :])
        self.synthesis: torch.Tensor  # window / overlap: what multiplies each inverse-FFT frame
        self.register_buffer("synthesis", (window / overlap).float(), persistent=False)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if self.fft_training and self.training and not self.is_streaming:
            return self._fft(spec)
        return self.conv(spec)

    def _fft(self, spec: torch.Tensor) -> torch.Tensor:
        """The same overlap-add by inverse FFT and ``fold``, for training (see :meth:`CausalSTFT._fft`).

        The kernel's doubled inner bins and ``1 / n_fft`` are ``irfft``'s own; the conv's sine rows are 0
        at DC and Nyquist, where ``irfft`` ignores the imaginary part. The causal transposed conv trims
        its last ``n_fft - hop`` samples, so the output is ``N * hop`` long.
        """
        bins, n = spec.shape[1] // 2, spec.shape[-1]
        frames = torch.fft.irfft(torch.complex(spec[:, :bins], spec[:, bins:]), n=self.n_fft, dim=1)
        frames = frames * self.synthesis.to(frames)[None, :, None]  # [B, n_fft, N]
        length = (n - 1) * self.hop + self.n_fft
        out = F.fold(frames, (1, length), kernel_size=(1, self.n_fft), stride=(1, self.hop))  # [B, 1, 1, L]
        return out[:, :, 0, : n * self.hop]


class LogMel(nn.Module):
    """``[B, 2F, N]`` complex frames -> natural-log mel magnitudes ``[B, n_mels, N]`` (floor 1e-5)."""

    def __init__(self, n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        self.filters: torch.Tensor
        self.register_buffer("filters", mel_filterbank(n_fft, n_mels, sample_rate).clone(), persistent=False)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        bins = spec.shape[1] // 2
        mag = torch.sqrt(spec[:, :bins] ** 2 + spec[:, bins:] ** 2 + 1e-12)
        mel = torch.einsum("mf,bfn->bmn", self.filters.to(mag), mag)
        return torch.log(mel.clamp(min=1e-5))


class PolarToComplex(nn.Module):
    """``[B, 2F, N]`` (log-magnitudes, then phases) -> ``[B, 2F, N]`` (real parts, then imaginary parts)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bins = x.shape[1] // 2
        mag = torch.exp(x[:, :bins].clamp(max=MAX_LOG_MAGNITUDE))
        phase = x[:, bins:]
        return torch.cat([mag * torch.cos(phase), mag * torch.sin(phase)], dim=1)


class SpectralEncoder(StreamingContainer):
    """Causal STFT -> log-mel -> SEANet encoder: ``[B, 1, T]`` -> ``[B, D, T / hop_length]``.

    Args:
        seanet: SEANet keyword arguments (``ratios`` counted on STFT frames, ``channels`` ignored).
        n_fft: STFT window.
        hop: STFT hop in samples.
        n_mels: mel bands fed to the SEANet.
    """

    def __init__(self, seanet: dict, n_fft: int, hop: int, n_mels: int) -> None:
        super().__init__()
        self.stft = CausalSTFT(n_fft, hop)
        self.mel = LogMel(n_fft, n_mels)
        self.net = SEANetEncoder(**{**seanet, "channels": n_mels})
        self.hop_length = hop * int(self.net.hop_length)
        self.dimension = int(self.net.dimension)  # MimiModel reads it

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.net(self.mel(self.stft(audio)))


def mel_interpolation(n_fft: int, n_bands: int, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """``[F, n_bands]`` matrix that linearly interpolates values at mel-spaced band centres onto the
    ``F = n_fft // 2 + 1`` STFT bins (constant beyond the first and last centre)."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    centres = mel_points_hz(n_bands + 2, sample_rate / 2, torch.float64)[1:-1]  # mel_filterbank's centres
    pos = torch.from_numpy(np.interp(freqs.numpy(), centres.numpy(), np.arange(n_bands, dtype=np.float64)))
    lo = pos.floor().long().clamp(max=n_bands - 1)
    hi = (lo + 1).clamp(max=n_bands - 1)
    frac = pos - lo
    out = torch.zeros(len(freqs), n_bands, dtype=torch.float64)
    out[torch.arange(len(freqs)), lo] += 1 - frac
    out[torch.arange(len(freqs)), hi] += frac
    return out.float()


class EnvelopeExpansion(nn.Module):
    """``[B, E + 2F, N]`` (mel envelope, per-bin detail, phases) -> ``[B, 2F, N]`` (log-magnitudes, phases).

    The log-magnitude of bin ``k`` is the envelope interpolated from ``E`` mel-spaced bands plus a
    per-bin detail term; the detail channels (harmonics) start at zero. Why: speech stays intelligible
    from its smooth envelope alone (80 mel bands every 10 ms with random phase: Whisper base read 8
    held-out clips at 3.3 % WER, the originals at 7.8 %), so the envelope is the part worth making easy.
    Measured so far, it did not learn measurably faster than per-bin magnitudes (held-out mel 0.342 vs
    0.345 after 1500 steps); the committed codec uses it because its one long run did.
    """

    def __init__(self, n_fft: int, n_bands: int) -> None:
        super().__init__()
        self.n_bands = n_bands
        self.expand: torch.Tensor
        self.register_buffer("expand", mel_interpolation(n_fft, n_bands), persistent=False)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, E + 2F, N]`` -> (envelope ``[B, E, N]``, detail ``[B, F, N]``, phases ``[B, F, N]``)."""
        bins = self.expand.shape[0]
        return x[:, : self.n_bands], x[:, self.n_bands : self.n_bands + bins], x[:, -bins:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env, detail, phase = self.split(x)
        log_mag = torch.einsum("fe,ben->bfn", self.expand.to(env), env) + detail
        return torch.cat([log_mag, phase], dim=1)


def frame_spectrum(audio: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """The STFT of ``audio`` ``[B, 1, T]`` over a :class:`CausalISTFT`'s frames: ``[B, F, T / hop]`` complex.

    The inverse STFT adds frame ``j`` at samples ``[j * hop, j * hop + n_fft)``, so this is what a
    spectral decoder's frame ``j`` should hold: the periodic-Hann-windowed DFT of those samples (zeros past
    the end).
    """
    x = F.pad(audio[:, 0], (0, n_fft - hop))
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    return torch.stft(x, n_fft, hop, window=window, center=False, return_complex=True)


class SpectralDecoder(StreamingContainer):
    """SEANet decoder -> polar spectra -> causal inverse STFT: ``[B, D, T']`` -> ``[B, 1, T' * hop_length]``.

    Args:
        seanet: SEANet keyword arguments (``ratios`` counted on STFT frames, ``channels`` ignored).
        n_fft: STFT window.
        hop: STFT hop in samples.
        envelope_bands: predict log-magnitudes as a mel-band envelope plus per-bin detail
            (:class:`EnvelopeExpansion`); 0 predicts every bin directly.
    """

    def __init__(self, seanet: dict, n_fft: int, hop: int, envelope_bands: int = 0) -> None:
        super().__init__()
        bins = n_fft // 2 + 1
        self.net = SEANetDecoder(**{**seanet, "channels": envelope_bands + 2 * bins})
        self.envelope = EnvelopeExpansion(n_fft, envelope_bands) if envelope_bands else None
        if envelope_bands:
            final = self.net.model[-1]
            assert isinstance(final, StreamingConv1d)
            last = final.conv.conv  # the final conv: zero the detail outputs at init
            with torch.no_grad():
                last.weight[envelope_bands : envelope_bands + bins].zero_()
                if last.bias is not None:
                    last.bias[envelope_bands : envelope_bands + bins].zero_()
        self.polar = PolarToComplex()
        self.istft = CausalISTFT(n_fft, hop)

    def spectrum(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, D, T']`` -> log-magnitudes then phases ``[B, 2F, T' * hop_length / hop]``."""
        x = self.net(hidden)
        return self.envelope(x) if self.envelope is not None else x

    def decode(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, D, T']`` -> (audio ``[B, 1, T]``, the spectrum it was made from, see :meth:`spectrum`)."""
        spectrum = self.spectrum(hidden)
        return self.istft(self.polar(spectrum)), spectrum

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decode(hidden)[0]
