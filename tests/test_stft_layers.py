"""The spectral codec variant's fixed transforms: exact inversion, streaming, causality."""

from __future__ import annotations

import torch

from e2e_voice.codec.stft_layers import (
    CausalISTFT,
    CausalSTFT,
    EnvelopeExpansion,
    LogMel,
    PolarToComplex,
    frame_spectrum,
    mel_interpolation,
)

N_FFT, HOP = 960, 240


@torch.no_grad()
def test_stft_matches_torch_stft() -> None:
    x = torch.randn(2, 1, 24 * HOP)
    ours = CausalSTFT(N_FFT, HOP)(x)  # [B, 2F, N], frame j ends at sample (j + 1) * HOP
    padded = torch.nn.functional.pad(x[:, 0], (N_FFT - HOP, 0))
    ref = torch.stft(
        padded, N_FFT, HOP, window=torch.hann_window(N_FFT), center=False, return_complex=True
    )  # [B, F, N]
    assert ours.shape == (2, 2 * (N_FFT // 2 + 1), 24)
    torch.testing.assert_close(ours, torch.cat([ref.real, ref.imag], 1), atol=2e-4, rtol=1e-4)


@torch.no_grad()
def test_istft_inverts_stft_after_the_first_window() -> None:
    """Overlap-add of the analysis frames gives the signal back once every sample is fully covered."""
    x = torch.randn(1, 1, 40 * HOP)
    y = CausalISTFT(N_FFT, HOP)(CausalSTFT(N_FFT, HOP)(x))
    assert y.shape == x.shape
    # output lags input by n_fft - hop samples: frame j (ending at (j+1)*HOP) is written from j*HOP
    lag = N_FFT - HOP
    torch.testing.assert_close(y[..., lag + N_FFT :], x[..., N_FFT:-lag], atol=1e-4, rtol=0)


@torch.no_grad()
def test_streaming_equals_whole() -> None:
    x = torch.randn(2, 1, 32 * HOP)
    # inference mode: in training the whole clip goes through the FFT path (equal within float rounding)
    stft, istft = CausalSTFT(N_FFT, HOP).eval(), CausalISTFT(N_FFT, HOP).eval()
    spec_whole = stft(x)
    torch.manual_seed(0)
    polar = torch.randn(2, 2 * (N_FFT // 2 + 1), 32)
    whole = istft(PolarToComplex()(polar))
    specs, outs = [], []
    with stft.streaming(2), istft.streaming(2):
        for i in range(4):  # 8 hops = one 80 ms codec frame at a time
            specs.append(stft(x[..., i * 8 * HOP : (i + 1) * 8 * HOP]))
            outs.append(istft(PolarToComplex()(polar[..., i * 8 : (i + 1) * 8])))
    torch.testing.assert_close(torch.cat(specs, -1), spec_whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(outs, -1), whole, atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_causality() -> None:
    x = torch.randn(1, 1, 16 * HOP)
    y = x.clone()
    y[..., 8 * HOP :] = torch.randn(1, 1, 8 * HOP)
    stft = CausalSTFT(N_FFT, HOP)
    assert torch.equal(stft(x)[..., :8], stft(y)[..., :8])
    assert not torch.allclose(stft(x)[..., 8:], stft(y)[..., 8:])
    spec = torch.randn(1, 2 * (N_FFT // 2 + 1), 16)
    other = spec.clone()
    other[..., 8:] = torch.randn_like(other[..., 8:])
    istft = CausalISTFT(N_FFT, HOP)
    assert torch.equal(istft(spec)[..., : 8 * HOP], istft(other)[..., : 8 * HOP])


def test_fixed_kernels_are_not_trained_or_saved() -> None:
    stft, istft = CausalSTFT(N_FFT, HOP), CausalISTFT(N_FFT, HOP)
    for module in (stft, istft):
        assert all(not p.requires_grad for p in module.parameters())
        assert not any(k.endswith("weight") for k in module.state_dict())


def test_log_mel_is_finite_on_silence() -> None:
    mel = LogMel(N_FFT, 80)(CausalSTFT(N_FFT, HOP)(torch.zeros(1, 1, 8 * HOP)))
    assert mel.shape == (1, 80, 8) and bool(torch.isfinite(mel).all())


def test_envelope_expansion() -> None:
    """Interpolation weights sum to one per bin; a flat envelope gives flat magnitudes; detail adds on."""
    weights = mel_interpolation(N_FFT, 80)
    assert weights.shape == (N_FFT // 2 + 1, 80)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(N_FFT // 2 + 1))
    bins = N_FFT // 2 + 1
    expand = EnvelopeExpansion(N_FFT, 80)
    x = torch.zeros(1, 80 + 2 * bins, 3)
    x[:, :80] = 2.0
    x[:, 80 + 5] = 1.0  # detail on bin 5
    out = expand(x)
    assert out.shape == (1, 2 * bins, 3)
    expected = torch.full((bins,), 2.0)
    expected[5] = 3.0
    torch.testing.assert_close(out[0, :bins, 0], expected)
    # a rising envelope reaches the top bins, and low bins follow the first band
    x[:, :80] = torch.linspace(0, 1, 80)[:, None]
    log_mag = expand(x)[0, :bins, 0]
    assert log_mag[0] == 0.0 and abs(float(log_mag[-1]) - 1.0) < 1e-6
    assert bool((log_mag[10:].diff() >= -1e-6).all())
    env, detail, phase = expand.split(x)  # the channel layout forward() reads
    assert torch.equal(env, x[:, :80]) and torch.equal(detail, x[:, 80 : 80 + bins])
    assert torch.equal(phase, x[:, 80 + bins :])


@torch.no_grad()
def test_frame_spectrum_is_what_the_inverse_stft_frames_hold() -> None:
    """A clip's frame spectrum, as log-magnitudes and phases, through the decoder's polar map and inverse
    STFT gives the clip back from sample n_fft - hop on (where four frames overlap), unshifted: it is the
    target of a spectral decoder's frames (``SpectrumLoss``, ``eval.codec_probe``)."""
    x = torch.randn(1, 1, 40 * HOP)
    spec = frame_spectrum(x, N_FFT, HOP)
    assert spec.shape == (1, N_FFT // 2 + 1, 40)
    polar = torch.cat([torch.log(spec.abs().clamp(min=1e-5)), torch.angle(spec)], dim=1)
    rebuilt = CausalISTFT(N_FFT, HOP)(PolarToComplex()(polar))
    torch.testing.assert_close(rebuilt[..., N_FFT - HOP :], x[..., N_FFT - HOP :], atol=1e-4, rtol=0)


def test_training_fft_path_equals_the_conv() -> None:
    """In training (not streaming) both transforms run by FFT; values and gradients match the convs."""
    torch.manual_seed(0)
    stft, istft = CausalSTFT(960, 240), CausalISTFT(960, 240)
    audio = torch.randn(3, 1, 240 * 20)
    spec = torch.randn(3, 2 * 481, 20)
    results = []
    for training in (False, True):
        stft.train(training), istft.train(training)
        s = spec.clone().requires_grad_(True)
        out = istft(s)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        results.append((stft(audio), out.detach(), s.grad))
    (conv_spec, conv_out, conv_grad), (fft_spec, fft_out, fft_grad) = results
    assert conv_out.shape == fft_out.shape == (3, 1, 240 * 20)
    torch.testing.assert_close(fft_spec, conv_spec, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(fft_out, conv_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fft_grad, conv_grad, atol=1e-5, rtol=1e-4)
    assert fft_spec.abs().max() > 1 and fft_out.abs().max() > 1e-2  # not trivially equal


def test_streaming_keeps_the_conv_in_training_mode() -> None:
    """The FFT path has no streaming state: a streamed frame must go through the conv."""

    def no_fft(_: torch.Tensor) -> torch.Tensor:
        raise AssertionError("FFT path used while streaming")

    stft, istft = CausalSTFT(960, 240).train(), CausalISTFT(960, 240).train()
    stft._fft, istft._fft = no_fft, no_fft  # type: ignore[method-assign]
    with stft.streaming(1), istft.streaming(1):
        assert stft(torch.randn(1, 1, 1920)).shape == (1, 962, 8)
        assert istft(torch.randn(1, 962, 8)).shape == (1, 1, 1920)
