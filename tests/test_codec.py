"""MimiCodec: streaming equals whole clip, causality, loading parity with moshi, checkpoints, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from moshi.models.loaders import get_mimi
from safetensors import safe_open
from safetensors.torch import save_file

from e2e_voice.codec import MimiCodec, build_codec, load_codec, mimi_config, randomize_codebooks, save_codec
from e2e_voice.constants import CONFIG_DIR, SAMPLE_RATE
from tests.helpers import SPECTRAL, TINY, espeak_speech

FAST_VARIANTS = [
    pytest.param({**TINY, "num_codebooks": 4}, id="tiny"),
    pytest.param({**TINY, "num_codebooks": 4, "frame_rate": 25.0}, id="tiny-25hz"),
    pytest.param(
        {"n_filters": 32, "transformer_layers": 2, "quantizer_levels": 8, "num_codebooks": 8}, id="small"
    ),
    pytest.param({**TINY, **SPECTRAL, "num_codebooks": 4}, id="tiny-spectral"),
    pytest.param(
        {**TINY, **SPECTRAL, "num_codebooks": 4, "decoder_transformer_layers": 2}, id="tiny-spectral-dec2"
    ),
]
VARIANTS = [
    *FAST_VARIANTS,
    pytest.param(
        {"n_filters": 64, "transformer_layers": 8, "quantizer_levels": 32, "num_codebooks": 8},
        id="kyutai-arch",
        marks=pytest.mark.slow,
    ),
]


def _codec(kwargs: dict[str, Any], seed: int = 0) -> MimiCodec:
    torch.manual_seed(seed)
    codec = build_codec(**kwargs)
    randomize_codebooks(codec.model, seed)
    return codec


def _stream(codec: MimiCodec, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` ``[B, 1, n * frame_size]`` through ``codec.step`` one frame at a time: (codes, audio)."""
    fs = codec.frame_size
    step_codes, step_audio = [], []
    with codec.streaming(x.shape[0]):
        for i in range(x.shape[-1] // fs):
            c, a = codec.step(x[..., i * fs : (i + 1) * fs])
            step_codes.append(c)
            step_audio.append(a)
    return torch.cat(step_codes, -1), torch.cat(step_audio, -1)


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    audio = espeak_speech("Streaming codes should match.", SAMPLE_RATE)
    return torch.from_numpy(audio)[None, None]  # [1, 1, T]


@pytest.mark.parametrize("kwargs", VARIANTS)
@torch.no_grad()
def test_streaming_equals_whole_clip(kwargs: dict[str, Any], speech: torch.Tensor) -> None:
    codec = _codec(kwargs)
    n = 6
    x = speech[..., : n * codec.frame_size]
    x = torch.cat([x, x.flip(-1)])  # batch of 2 different signals  [2, 1, T]
    codes = codec.encode(x)  # [2, K, n]
    audio = codec.decode(codes)
    assert tuple(codes.shape) == (2, kwargs["num_codebooks"], n)
    assert codes.unique().numel() > 1, "random codebooks should give varied codes"
    step_codes, step_audio = _stream(codec, x)
    assert torch.equal(step_codes, codes)
    torch.testing.assert_close(step_audio, audio, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs", FAST_VARIANTS)
@torch.no_grad()
def test_streaming_equals_whole_clip_past_the_window(kwargs: dict[str, Any], speech: torch.Tensor) -> None:
    """With a 4-step attention context and 8 frames, most steps attend to a full window: the streaming
    key-value ring must hold the window and the frame's own new steps (moshi's holds exactly the context,
    so a 2-step frame lost one key past the window, and the latent drifted by ~1e-3)."""
    codec = _codec({**kwargs, "transformer_context": 4})
    n = 8
    x = speech[..., : n * codec.frame_size]
    whole = codec.model._encode_to_unquantized_latent(x)  # [1, D, n]
    codes = codec.encode(x)
    audio = codec.decode(codes)
    latents = []
    with codec.streaming(1):
        for i in range(n):
            frame = x[..., i * codec.frame_size : (i + 1) * codec.frame_size]
            latents.append(codec.model._encode_to_unquantized_latent(frame))
    step_codes, step_audio = _stream(codec, x)
    torch.testing.assert_close(torch.cat(latents, -1), whole, atol=1e-5, rtol=1e-4)
    assert torch.equal(step_codes, codes)
    torch.testing.assert_close(step_audio, audio, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs", FAST_VARIANTS)
@torch.no_grad()
def test_causality(kwargs: dict[str, Any], speech: torch.Tensor) -> None:
    codec = _codec(kwargs)
    fs = codec.frame_size
    x = speech[..., : 6 * fs].clone()
    y = x.clone()
    y[..., 3 * fs :] = torch.randn_like(y[..., 3 * fs :])  # a different future
    latent_x = codec.model._encode_to_unquantized_latent(x)
    latent_y = codec.model._encode_to_unquantized_latent(y)
    torch.testing.assert_close(latent_x[..., :3], latent_y[..., :3], atol=1e-6, rtol=0)
    assert not torch.allclose(latent_x[..., 3:], latent_y[..., 3:])
    cx, cy = codec.encode(x), codec.encode(y)
    assert torch.equal(cx[..., :3], cy[..., :3])
    # and the decoder: changing future codes leaves past audio alone
    cz = cx.clone()
    cz[..., 3:] = (cz[..., 3:] + 1) % codec.cardinality
    torch.testing.assert_close(
        codec.decode(cx)[..., : 3 * fs], codec.decode(cz)[..., : 3 * fs], atol=1e-6, rtol=0
    )


@pytest.mark.parametrize(
    "arch",
    [
        pytest.param(TINY, id="tiny"),
        pytest.param(
            {"n_filters": 64, "transformer_layers": 8, "quantizer_levels": 32},
            id="kyutai",
            marks=pytest.mark.slow,
        ),
    ],
)
@torch.no_grad()
def test_kyutai_checkpoint_parity(arch: dict[str, Any], tmp_path: Path, speech: torch.Tensor) -> None:
    """Moshi's own model, saved the way Kyutai ships Mimi, loads through our builder bit-identically."""
    torch.manual_seed(1)
    reference = get_mimi(None, mimi_config(**arch), num_codebooks=4)
    randomize_codebooks(reference, seed=1)
    path = tmp_path / "tokenizer-test.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))

    torch.manual_seed(123)  # different init: everything must come from the file
    ours = build_codec(num_codebooks=4, checkpoint=path, **arch)
    x = speech[..., : 4 * 1920]
    ref_codes = reference.encode(x)
    codes = ours.encode(x)
    assert torch.equal(codes, ref_codes)
    assert torch.equal(ours.decode(codes), reference.decode(ref_codes))


@torch.no_grad()
def test_checkpoint_round_trip(tmp_path: Path, speech: torch.Tensor) -> None:
    codec = _codec({**TINY, "num_codebooks": 3, "frame_rate": 25.0})
    path = save_codec(codec, tmp_path / "codec.safetensors")
    loaded = load_codec(path)  # architecture and codebook count come from the file's metadata
    assert loaded.arch == codec.arch and loaded.num_codebooks == 3
    x = speech[..., : 4 * codec.frame_size]
    assert torch.equal(loaded.encode(x), codec.encode(x))
    assert torch.equal(loaded.decode(codec.encode(x)), codec.decode(codec.encode(x)))
    with pytest.raises(ValueError, match="different architecture"):
        build_codec(num_codebooks=3, checkpoint=path, n_filters=32)


@torch.no_grad()
def test_half_precision_export(tmp_path: Path, speech: torch.Tensor) -> None:
    """fp16 weights halve the file; codebook buffers stay fp32, and the decode stays close."""
    codec = _codec({**TINY, "num_codebooks": 3})
    full = save_codec(codec, tmp_path / "fp32.safetensors")
    half = save_codec(codec, tmp_path / "fp16.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.75 * full.stat().st_size
    with safe_open(str(half), framework="pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    assert any(d == "F16" for d in dtypes.values())
    assert all(d == "F32" for k, d in dtypes.items() if "embedding_sum" in k or "cluster_usage" in k)
    loaded = load_codec(half)
    assert next(loaded.model.parameters()).dtype == torch.float32  # cast back on load
    x = speech[..., : 4 * codec.frame_size]
    codes = codec.encode(x)
    ref, out = codec.decode(codes), loaded.decode(codes)
    snr = 10 * torch.log10(ref.pow(2).sum() / (ref - out).pow(2).sum())
    assert snr > 30, snr


@torch.no_grad()
def test_spectral_round_trip_and_export(tmp_path: Path, speech: torch.Tensor) -> None:
    """The spectral variant saves and loads exactly; its fixed STFT kernels are rebuilt, not stored."""
    codec = _codec({**TINY, **SPECTRAL, "num_codebooks": 3})
    x = speech[..., : 4 * codec.frame_size]
    codes = codec.encode(x)
    path = save_codec(codec, tmp_path / "spectral.safetensors")
    loaded = load_codec(path)
    assert loaded.arch["frontend"] == "spectral"
    assert torch.equal(loaded.encode(x), codes)
    assert torch.equal(loaded.decode(codes), codec.decode(codes))
    half = load_codec(save_codec(codec, tmp_path / "half.safetensors", dtype=torch.float16))
    with safe_open(str(tmp_path / "half.safetensors"), framework="pt") as f:
        assert not any("stft" in k and k.endswith("weight") for k in f.keys())  # noqa: SIM118
    torch.testing.assert_close(
        half.model.encoder.stft.conv.conv.conv.weight, codec.model.encoder.stft.conv.conv.conv.weight
    )


@torch.no_grad()
def test_decoder_depth_is_its_own_and_is_stored(tmp_path: Path, speech: torch.Tensor) -> None:
    """``decoder_transformer_layers`` deepens only the decoder, and a saved file rebuilds that shape."""
    codec = _codec({**TINY, **SPECTRAL, "num_codebooks": 3, "decoder_transformer_layers": 3})
    layers = lambda c: [  # noqa: E731
        len(t.transformer.layers) for t in (c.model.encoder_transformer, c.model.decoder_transformer)
    ]
    assert layers(codec) == [1, 3]
    assert layers(_codec({**TINY, **SPECTRAL, "num_codebooks": 3})) == [1, 1]
    x = speech[..., : 4 * codec.frame_size]
    loaded = load_codec(save_codec(codec, tmp_path / "dec3.safetensors"))
    assert layers(loaded) == [1, 3] and loaded.arch["decoder_transformer_layers"] == 3
    codes = codec.encode(x)
    assert torch.equal(loaded.encode(x), codes)
    assert torch.equal(loaded.decode(codes), codec.decode(codes))


def test_spectral_config_errors() -> None:
    with pytest.raises(ValueError, match="frontend must be one of"):
        build_codec(**TINY, frontend="mel")
    with pytest.raises(ValueError, match="decoder_transformer_layers=2: a separate decoder depth needs"):
        build_codec(**TINY, decoder_transformer_layers=2)  # the waveform Mimi
    with pytest.raises(ValueError, match="at least 1 layer"):
        build_codec(**TINY, **SPECTRAL, decoder_transformer_layers=0)
    with pytest.raises(ValueError, match="4 x stft_hop"):
        build_codec(**TINY, **SPECTRAL, n_fft=1024)
    with pytest.raises(ValueError, match="divided by a whole number"):
        build_codec(**{**TINY, **SPECTRAL, "ratios": (3, 2)})


def test_checkpoint_wrong_architecture(tmp_path: Path) -> None:
    reference = get_mimi(None, mimi_config(**TINY), num_codebooks=2)
    path = tmp_path / "kyutai-like.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="does not fit the architecture"):
        build_codec(num_codebooks=2, checkpoint=path, n_filters=32, transformer_layers=1, quantizer_levels=4)
    with pytest.raises(FileNotFoundError, match="not found"):
        build_codec(checkpoint=tmp_path / "missing.safetensors")


@pytest.fixture(scope="module")
def tiny() -> MimiCodec:
    return _codec({**TINY, "num_codebooks": 4})


@pytest.mark.parametrize(
    ("n", "message"),
    [
        pytest.param(
            1000, "expected 1920 samples per frame \\(80 ms at 24 kHz\\), got 1000: buffer input", id="short"
        ),
        pytest.param(3840, "got 3840", id="two-frames"),
    ],
)
def test_wrong_frame_size(tiny: MimiCodec, n: int, message: str) -> None:
    with tiny.streaming(1), pytest.raises(ValueError, match=message):
        tiny.encode_frame(torch.zeros(1, 1, n))


@torch.no_grad()
def test_stream_errors(tiny: MimiCodec) -> None:
    with pytest.raises(RuntimeError, match="streaming"):
        tiny.encode_frame(torch.zeros(1, 1, 1920))
    with tiny.streaming(1):
        with pytest.raises(RuntimeError, match="already streaming"), tiny.streaming(1):
            pass
        with pytest.raises(ValueError, match="must be at 24000 Hz, got 16000 Hz: resample the stream"):
            tiny.encode_frame(torch.zeros(1, 1, 1920), sample_rate=16000)
        with pytest.raises(ValueError, match="batch 1, got a frame of batch 2"):
            tiny.encode_frame(torch.zeros(2, 1, 1920))
        with pytest.raises(ValueError, match="one step"):
            tiny.decode_frame(torch.zeros(1, 4, 2, dtype=torch.long))
    with tiny.streaming(1):  # state was cleared on exit, a second stream works
        assert tuple(tiny.encode_frame(torch.zeros(1920)).shape) == (1, 4, 1)


@pytest.mark.parametrize(
    "bad",
    [pytest.param(float("nan"), id="nan"), pytest.param(float("inf"), id="inf")],
)
@torch.no_grad()
def test_nan_input_is_an_error(tiny: MimiCodec, bad: float) -> None:
    x = torch.zeros(1, 1, 1920 * 2)
    x[0, 0, 100] = bad
    with pytest.raises(ValueError, match="NaN/Inf"):
        tiny.encode(x)
    with tiny.streaming(1), pytest.raises(ValueError, match="NaN/Inf"):
        tiny.encode_frame(x[..., :1920])


@torch.no_grad()
def test_silence_and_empty(tiny: MimiCodec) -> None:
    codes = tiny.encode(torch.zeros(1, 1, 1920 * 3))  # silence is valid input
    assert tuple(codes.shape) == (1, 4, 3)
    assert torch.isfinite(tiny.decode(codes)).all()
    with pytest.raises(ValueError, match="empty audio"):
        tiny.encode(torch.zeros(1, 1, 0))
    with pytest.raises(ValueError, match="codes must lie in"):
        tiny.decode(torch.full((1, 4, 2), 10_000))


@torch.no_grad()
def test_sample_rates_and_channels(tiny: MimiCodec, speech: torch.Tensor) -> None:
    x24 = speech[..., : 4 * 1920].numpy()[0, 0]
    x16 = espeak_speech("Streaming codes should match.", 16000)[: 4 * 1280]
    codes16 = tiny.encode(x16, sample_rate=16000)
    assert tuple(codes16.shape) == (1, 4, 4)
    with pytest.raises(ValueError, match="sample_rate must be a positive"):
        tiny.encode(x24, sample_rate=0)
    stereo = np.stack([x24, np.zeros_like(x24)])  # [C=2, T]
    mixed = tiny.encode(stereo)
    assert torch.equal(mixed, tiny.encode(x24 / 2))
    folded = build_codec(**TINY, num_codebooks=4, channels="fold")
    folded.load_state_dict(tiny.state_dict())
    per_channel = folded.encode(stereo)  # channels become batch items
    assert tuple(per_channel.shape) == (2, 4, 4)
    assert torch.equal(per_channel[:1], tiny.encode(x24))
    with pytest.raises(ValueError, match="channels must be one of"):
        build_codec(**TINY, num_codebooks=4, channels="left")


@torch.no_grad()
def test_training_forward_matches_encode_decode(tiny: MimiCodec, speech: torch.Tensor) -> None:
    x = speech[..., : 4 * 1920]
    tiny.eval()
    out = tiny(x)
    assert torch.equal(out.codes, tiny.encode(x))
    torch.testing.assert_close(out.audio, tiny.decode(out.codes), atol=1e-6, rtol=0)
    assert out.semantic.shape[-1] == 4


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(["codec=tiny"], id="tiny"),
        pytest.param(["codec=tiny", "+codec.frame_rate=25.0"], id="tiny-25hz"),
        pytest.param(["codec=small"], id="small"),
        pytest.param(["codec=cpu", "codec.checkpoint=null"], id="cpu"),
    ],
)
def test_codec_configs_instantiate(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    codec = instantiate(cfg.codec, _convert_="all")
    assert isinstance(codec, MimiCodec)
    assert codec.num_codebooks == cfg.codec.num_codebooks
    assert codec.bitrate == pytest.approx(codec.num_codebooks * np.log2(codec.cardinality) * codec.frame_rate)


def test_kyutai_weights_through_registry_need_a_path_offline() -> None:
    from e2e_voice.assets.registry import ModelNotAvailableError

    with pytest.raises(ModelNotAvailableError, match="kyutai/moshiko-pytorch-bf16"):
        build_codec(checkpoint="mimi-kyutai", n_filters=64, transformer_layers=8, quantizer_levels=32)
