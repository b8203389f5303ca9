"""Codec training losses: multi-scale mel reconstruction, a multi-scale STFT or log-mel discriminator
(hinge adversarial loss + feature matching) and semantic distillation by cosine distance.

Shapes: audio ``[B, 1, T]``; discriminator input per scale ``[B, 2, N, F]`` (real/imag, frames, bins) for
the STFT one, ``[B, M, N]`` (mel bands, frames) for the mel one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from e2e_voice.codec.spectral import log_mel, multiscale_mel_distance
from e2e_voice.codec.stft_layers import MAX_LOG_MAGNITUDE, frame_spectrum

# A discriminator output: per scale, (logits, feature maps of every layer).
DiscOutput = list[tuple[torch.Tensor, list[torch.Tensor]]]


def _conv_stack(
    convs: nn.ModuleList, out: nn.Module, h: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A discriminator's body: each conv then leaky ReLU; returns (logits, every layer's features)."""
    feats = []
    for conv in convs:
        h = F.leaky_relu(conv(h), 0.2)
        feats.append(h)
    return out(h), feats


class STFTDiscriminator(nn.Module):
    """One resolution: 2D convs over the complex STFT, dilated in time, strided in frequency."""

    def __init__(self, n_fft: int, filters: int = 32, dilations: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.window: torch.Tensor
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [nn.Conv2d(2, filters, (3, 9), padding=(1, 4))]
        for d in dilations:
            layers.append(nn.Conv2d(filters, filters, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
        layers.append(nn.Conv2d(filters, filters, (3, 3), padding=(1, 1)))
        self.convs = nn.ModuleList(nn.utils.parametrizations.weight_norm(c) for c in layers)
        self.out = nn.utils.parametrizations.weight_norm(nn.Conv2d(filters, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = audio[:, 0]  # [B, T]
        spec = torch.stft(
            x, self.n_fft, hop_length=self.n_fft // 4, window=self.window.to(x), return_complex=True
        )  # [B, F, N]
        h = torch.view_as_real(spec).permute(0, 3, 2, 1)  # [B, 2, N, F]
        return _conv_stack(self.convs, self.out, h)


class MultiScaleSTFTDiscriminator(nn.Module):
    """Several :class:`STFTDiscriminator` at different FFT sizes (as in EnCodec and Mimi)."""

    def __init__(self, n_ffts: tuple[int, ...] = (512, 1024, 2048), filters: int = 32) -> None:
        super().__init__()
        self.discs = nn.ModuleList(STFTDiscriminator(int(n), filters) for n in n_ffts)

    def forward(self, audio: torch.Tensor) -> DiscOutput:
        return [d(audio) for d in self.discs]


class MelDiscriminator(nn.Module):
    """One resolution: 1D convs over time on a log-mel spectrogram, the bands as channels.

    Why: the complex-STFT discriminator cost 6x a step of the CPU recipe, and 2D convs over a log-mel
    image still cost 2.3x. Treating the bands as channels keeps every frame (the fine time structure of
    the envelope is what decides intelligibility here, see checkpoints/codec_cpu/EXPERIMENTS.md) and
    costs little. It cannot judge phase.
    """

    def __init__(
        self,
        n_fft: int,
        n_mels: int,
        sample_rate: int,
        filters: int = 128,
        dilations: tuple[int, ...] = (1, 2, 4, 8),
    ) -> None:
        super().__init__()
        self.n_fft, self.n_mels, self.sample_rate = n_fft, n_mels, sample_rate
        layers = [nn.Conv1d(n_mels, filters, 5, padding=2)]
        for d in dilations:
            layers.append(nn.Conv1d(filters, filters, 5, dilation=d, padding=2 * d))
        self.convs = nn.ModuleList(nn.utils.parametrizations.weight_norm(c) for c in layers)
        self.out = nn.utils.parametrizations.weight_norm(nn.Conv1d(filters, 1, 3, padding=1))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = log_mel(audio, self.sample_rate, self.n_fft, self.n_mels)  # [B, M, N]
        return _conv_stack(self.convs, self.out, h)


class MultiScaleMelDiscriminator(nn.Module):
    """Several :class:`MelDiscriminator` at different FFT sizes and band counts."""

    def __init__(
        self,
        n_ffts: tuple[int, ...] = (512, 1024),
        n_mels: tuple[int, ...] = (64, 80),
        sample_rate: int = 24000,
        filters: int = 128,
    ) -> None:
        super().__init__()
        if len(n_ffts) != len(n_mels):
            raise ValueError(
                f"disc.n_ffts {list(n_ffts)} and disc.n_mels {list(n_mels)} must have the same length"
            )
        self.discs = nn.ModuleList(
            MelDiscriminator(int(n), int(m), sample_rate, filters)
            for n, m in zip(n_ffts, n_mels, strict=True)
        )

    def forward(self, audio: torch.Tensor) -> DiscOutput:
        return [d(audio) for d in self.discs]


def build_discriminator(
    kind: str, n_ffts: tuple[int, ...], filters: int, sample_rate: int, n_mels: tuple[int, ...] = ()
) -> nn.Module:
    """The discriminator named by ``disc.kind``: ``stft`` (complex STFT, as in EnCodec/Mimi) or ``mel``."""
    if kind == "stft":
        return MultiScaleSTFTDiscriminator(n_ffts, filters)
    if kind == "mel":
        return MultiScaleMelDiscriminator(n_ffts, n_mels, sample_rate, filters)
    raise ValueError(f"disc.kind must be 'stft' or 'mel', got {kind!r}")


def discriminator_loss(real: DiscOutput, fake: DiscOutput) -> torch.Tensor:
    """Hinge loss for the discriminator (``fake`` computed from detached audio)."""
    loss = real[0][0].new_zeros(())
    for (lr, _), (lf, _) in zip(real, fake, strict=True):
        loss = loss + F.relu(1 - lr).mean() + F.relu(1 + lf).mean()
    return loss / len(real)


def generator_losses(real: DiscOutput, fake: DiscOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """(hinge adversarial loss, feature matching) for the generator.

    Feature matching is the L1 distance of every layer's features, each normalized by the mean
    magnitude of the real features so that layers weigh alike (EnCodec's relative feature loss).
    """
    adv = fake[0][0].new_zeros(())
    feat = fake[0][0].new_zeros(())
    n_feat = 0
    for (_, fr), (lf, ff) in zip(real, fake, strict=True):
        adv = adv + F.relu(1 - lf).mean()
        for a, b in zip(fr, ff, strict=True):
            feat = feat + (a.detach() - b).abs().mean() / (a.detach().abs().mean() + 1e-5)
            n_feat += 1
    return adv / len(fake), feat / max(n_feat, 1)


class ReconstructionLoss(nn.Module):
    """Multi-scale log-mel L1 plus a time-domain L1 term, returned separately.

    Args:
        sample_rate: of the audio.
        n_ffts: one STFT size per scale.
        n_mels: mel bands per scale.
        floor: mel values below it count as it (``loss.mel_floor``; see ``multiscale_mel_distance``).
    """

    def __init__(
        self,
        sample_rate: int,
        n_ffts: tuple[int, ...] = (256, 512, 1024, 2048),
        n_mels: tuple[int, ...] = (32, 64, 80, 128),
        floor: float = 1e-5,
    ) -> None:
        super().__init__()
        if not floor > 0:
            raise ValueError(f"loss.mel_floor must be > 0 (a log is taken of it), got {floor}")
        self.sample_rate = sample_rate
        self.n_ffts = tuple(int(n) for n in n_ffts)
        self.n_mels = tuple(int(n) for n in n_mels)
        self.floor = float(floor)

    def forward(self, reference: torch.Tensor, estimate: torch.Tensor) -> dict[str, torch.Tensor]:
        mel = multiscale_mel_distance(
            reference, estimate, self.sample_rate, self.n_ffts, self.n_mels, floor=self.floor
        )
        return {"rec/mel": mel, "rec/l1": (reference - estimate).abs().mean()}


class DistillationHead(nn.Module):
    """Projects the semantic quantizer output to the teacher's width; loss = 1 - cosine similarity.

    Teacher features are resampled in time (linear interpolation) to the codec frame rate, as the
    teacher (Whisper 50 Hz, WavLM 50 Hz) runs faster than the codes (12.5 Hz).
    """

    def __init__(self, codec_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv1d(codec_dim, teacher_dim, 1)

    def forward(self, semantic: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """``semantic`` [B, D, T'], ``teacher`` [B, T_t, D_t] -> scalar cosine distance."""
        student = self.proj(semantic)  # [B, D_t, T']
        target = F.interpolate(
            teacher.transpose(1, 2), size=student.shape[-1], mode="linear", align_corners=False
        )
        return (1 - F.cosine_similarity(student, target.to(student), dim=1)).mean()


def anti_wrap(x: torch.Tensor) -> torch.Tensor:
    """Distance of a phase difference to the nearest multiple of 2 pi (APNet's anti-wrapping function)."""
    return (x - 2 * torch.pi * torch.round(x / (2 * torch.pi))).abs()


class SpectrumLoss(nn.Module):
    """Direct supervision of a spectral decoder's STFT frames (the ``spectral`` codec variant).

    The decoder's frame ``j`` is overlap-added at samples ``[j * hop, j * hop + n_fft)``, so its target
    is the STFT of the input over that window. Losses (as in APNet, Ai & Ling 2023):

    - ``spec/amp``: L1 between predicted and target log-magnitudes;
    - ``spec/phase``: anti-wrapped errors of the instantaneous phase, the group delay (phase difference
      between adjacent bins) and the instantaneous frequency (phase advance between adjacent frames),
      averaged, each weighted by the target magnitude so that harmonics count and noise-floor bins,
      whose phase is arbitrary, do not.

    Why: with the multi-scale mel loss alone the small spectral codec emitted noise-like phase, and a
    discriminator, which would fix that, cost 6x the step time on CPU; these losses are cheap. Measured
    so far they did not measurably help (held-out mel 0.345 with them vs 0.371 without after 1500 steps,
    still unintelligible either way), and the phase loss of the committed run only fell 1.28 -> 1.14.

    Args:
        n_fft: the decoder's STFT window.
        hop: its hop.
        floor: with a value (``loss.spec_floor``), target and predicted magnitudes below it count as it
            in ``spec/amp``, so bins far below the speech cost nothing; None keeps the loss as the
            committed codec was trained (target floored at 1e-5, prediction not floored).
    """

    def __init__(self, n_fft: int, hop: int, floor: float | None = None) -> None:
        super().__init__()
        if floor is not None and not floor > 0:
            raise ValueError(f"loss.spec_floor must be > 0 or null, got {floor}")
        self.n_fft, self.hop, self.floor = n_fft, hop, floor

    def forward(self, reference: torch.Tensor, spectrum: torch.Tensor) -> dict[str, torch.Tensor]:
        """``reference`` [B, 1, T] audio, ``spectrum`` [B, 2F, T / hop] log-magnitudes then phases."""
        target = frame_spectrum(reference, self.n_fft, self.hop)  # [B, F, N]
        n = min(target.shape[-1], spectrum.shape[-1])
        target = target[..., :n]
        bins = spectrum.shape[1] // 2
        log_mag = spectrum[:, :bins, :n].clamp(max=MAX_LOG_MAGNITUDE)
        phase = spectrum[:, bins:, :n]
        mag = target.abs()
        if self.floor is None:
            amp = (log_mag - torch.log(mag.clamp(min=1e-5))).abs().mean()
        else:
            low = math.log(self.floor)
            amp = (log_mag.clamp(min=low) - torch.log(mag.clamp(min=self.floor))).abs().mean()
        weight = mag / (mag.mean() + 1e-8)
        true_phase = torch.angle(target)
        ip = (anti_wrap(phase - true_phase) * weight).mean()
        gd = (anti_wrap(phase.diff(dim=1) - true_phase.diff(dim=1)) * weight[:, 1:]).mean()
        iaf = (anti_wrap(phase.diff(dim=2) - true_phase.diff(dim=2)) * weight[..., 1:]).mean()
        return {"spec/amp": amp, "spec/phase": (ip + gd + iaf) / 3}
