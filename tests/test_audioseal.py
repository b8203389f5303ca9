"""AudioSeal backend: loading the official checkpoint format, offline and streaming plumbing, errors.

The checkpoints here are random weights written in the official layout (``{"xp.cfg": DictConfig, "model":
state dict with weight-normed convs}``), so nothing below is about detection quality: random networks detect
nothing meaningful. What is checked is that our loader reads the format the way the ``audioseal`` package
does, that the streaming path has exactly one frame of delay and is causal, and that bad files fail clearly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from e2e_voice.audio.io import save_audio
from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.safety.audioseal_backend import (
    DETECTOR_CARD,
    DETECTOR_FILE,
    GENERATOR_CARD,
    GENERATOR_FILE,
    AudioSealLoadError,
    AudioSealWatermarker,
    message_bits,
)
from e2e_voice.safety.watermark import StreamingWatermarker, WindowState, load_watermarker

pytest.importorskip("audioseal")


def _official_state_dict(model: torch.nn.Module, zero_output: bool = False) -> dict[str, torch.Tensor]:
    """Our built model's weights in the released layout: no ``inner_conv``, convs as weight_g/weight_v."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        key = key.replace(".inner_conv", "")
        if key.endswith(".weight") and value.ndim == 3:  # conv / transposed conv: weight_norm(dim=0)
            out[key[: -len("weight")] + "weight_g"] = torch.norm_except_dim(value, 2, 0)
            out[key[: -len("weight")] + "weight_v"] = value.clone()
        else:
            out[key] = value.clone()
    if zero_output:  # the generator's last conv (gain and bias): the watermark it predicts is exactly zero
        last = max(int(k.split(".")[2]) for k in out if k.startswith("decoder.model."))
        for k in out:
            if k.startswith(f"decoder.model.{last}.") and not k.endswith("weight_v"):
                out[k].zero_()
    return out


def write_random_audioseal(directory: Path, seed: int = 0, zero_watermark: bool = False) -> Path:
    """Write ``generator_base.pth`` and ``detector_base.pth`` with random weights in the official format."""
    from audioseal.builder import (
        AudioSealDetectorConfig,
        AudioSealWMConfig,
        create_detector,
        create_generator,
    )
    from audioseal.loader import AudioSeal, load_local_model_config
    from omegaconf import OmegaConf

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for card, kind, name in (
        (GENERATOR_CARD, "generator", GENERATOR_FILE),
        (DETECTOR_CARD, "detector", DETECTOR_FILE),
    ):
        cfg = OmegaConf.to_container(load_local_model_config(card))  # type: ignore[arg-type]
        assert isinstance(cfg, dict)
        cfg.pop("checkpoint")
        if kind == "generator":
            model: torch.nn.Module = create_generator(AudioSeal.parse_config(dict(cfg), AudioSealWMConfig))
        else:
            model = create_detector(AudioSeal.parse_config(dict(cfg), AudioSealDetectorConfig))
        state = _official_state_dict(model, zero_output=zero_watermark and kind == "generator")
        torch.save({"xp.cfg": OmegaConf.create(cfg), "model": state}, directory / name)
    return directory


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_audioseal(tmp_path_factory.mktemp("audioseal"))


@pytest.fixture(scope="module")
def wm(ckpt_dir: Path) -> AudioSealWatermarker:
    torch.set_num_threads(1)
    return AudioSealWatermarker(ckpt_dir, message=0xBEEF)


def _signal(n_frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames * FRAME_SIZE) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)


def _stream(wm: AudioSealWatermarker, x: np.ndarray) -> np.ndarray:
    s = StreamingWatermarker(wm, context_frames=2)
    frames = [s.step(x[i : i + FRAME_SIZE]) for i in range(0, len(x), FRAME_SIZE)]
    return np.concatenate([*frames, s.flush()])


def test_loader_matches_the_audioseal_package(wm: AudioSealWatermarker, ckpt_dir: Path) -> None:
    from audioseal import AudioSeal

    ref_gen = AudioSeal.load_generator(str(ckpt_dir / GENERATOR_FILE), nbits=16).eval()
    ref_det = AudioSeal.load_detector(str(ckpt_dir / DETECTOR_FILE), nbits=16).eval()
    x = torch.from_numpy(_signal(10)[:16_000])[None, None]  # treated as 16 kHz audio
    msg = message_bits(0xBEEF)
    from audioseal.libs.moshi.utils.compile import no_compile

    with torch.no_grad(), no_compile():
        torch.testing.assert_close(
            wm.generator.get_watermark(x, 16_000, message=msg), ref_gen.get_watermark(x, 16_000, message=msg)
        )
        torch.testing.assert_close(wm.detector(x)[0], ref_det(x)[0])


def test_embed_and_detect_plumbing(wm: AudioSealWatermarker) -> None:
    x = _signal(12)
    marked = wm.embed(x, SAMPLE_RATE)
    assert marked.shape == x.shape and marked.dtype == np.float32 and np.isfinite(marked).all()
    assert not np.array_equal(marked, x)  # random weights still add something
    np.testing.assert_allclose(marked - x, wm.watermark_signal(x, SAMPLE_RATE), atol=1e-6)
    p, bits = wm.scores(marked, SAMPLE_RATE)
    assert p.shape == (len(x) * 16_000 // SAMPLE_RATE,) and bits.shape == (16,)
    det = wm.detect(marked, SAMPLE_RATE)
    assert 0.0 <= det.confidence <= 1.0 and det.present == (det.confidence >= wm.threshold)
    with pytest.raises(ValueError, match="at least 100 ms"):
        wm.detect(x[:1000], SAMPLE_RATE)


def test_message_bits() -> None:
    assert message_bits(0xBEEF).tolist() == [[1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1]]
    with pytest.raises(ValueError, match=r"must be in \[0, 65536\)"):
        message_bits(1 << 16)


def test_streaming_delay_is_exactly_one_frame(tmp_path: Path) -> None:
    # A generator whose last conv is zero marks nothing, so the stream must be the input, one frame late.
    zero = AudioSealWatermarker(write_random_audioseal(tmp_path / "zero", zero_watermark=True))
    x = _signal(8)
    y = _stream(zero, x)
    assert len(y) == len(x) + FRAME_SIZE
    np.testing.assert_array_equal(y[:FRAME_SIZE], 0)
    np.testing.assert_allclose(y[FRAME_SIZE:], x, atol=1e-6)


def test_streaming_is_bounded_context_and_causal(wm: AudioSealWatermarker) -> None:
    x = _signal(10)
    y = _stream(wm, x)
    # Frame k comes back at step k+1, marked from the window [k-2, k+1] (context 2 + itself + 1 future).
    k = 6
    window = x[(k - 2) * FRAME_SIZE : (k + 2) * FRAME_SIZE]
    expected = wm.embed_window(window, SAMPLE_RATE, WindowState())[-2 * FRAME_SIZE : -FRAME_SIZE]
    np.testing.assert_allclose(y[(k + 1) * FRAME_SIZE : (k + 2) * FRAME_SIZE], expected, atol=1e-6)
    x2 = x.copy()
    x2[7 * FRAME_SIZE :] = np.random.default_rng(1).normal(0, 0.1, 3 * FRAME_SIZE)
    y2 = _stream(wm, x2)
    # Output frame j may look one frame ahead, never further: frames 0..5 (outputs 0..6) are untouched.
    np.testing.assert_array_equal(y[: 7 * FRAME_SIZE], y2[: 7 * FRAME_SIZE])
    assert not np.array_equal(y[7 * FRAME_SIZE :], y2[7 * FRAME_SIZE :])


@pytest.mark.parametrize(
    "make, match",
    [
        pytest.param(lambda d: None, "does not exist", id="missing-dir"),
        pytest.param(lambda d: d.mkdir(), "detector_base.pth is missing", id="empty-dir"),
        pytest.param(
            lambda d: (d.mkdir(), (d / DETECTOR_FILE).write_bytes(b"not a checkpoint")),
            "unreadable",
            id="garbage",
        ),
        pytest.param(
            lambda d: (
                d.mkdir(),
                torch.save(
                    {"model": {"detector.0.model.0.conv.conv.bias": torch.zeros(3)}}, d / DETECTOR_FILE
                ),
            ),
            "do not fit",
            id="wrong-weights",
        ),
        pytest.param(
            lambda d: (d.mkdir(), torch.save([1, 2], d / DETECTOR_FILE)), "not an AudioSeal", id="not-a-dict"
        ),
    ],
)
def test_bad_checkpoint_errors_name_the_fix(tmp_path: Path, make: object, match: str) -> None:
    d = tmp_path / "audioseal"
    make(d)  # type: ignore[operator]
    with pytest.raises(AudioSealLoadError, match=match) as err:
        AudioSealWatermarker(d)
    assert "huggingface.co/facebook/audioseal" in str(err.value)


def test_no_checkpoint_no_silent_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("E2E_VOICE_CACHE", str(tmp_path))
    monkeypatch.delenv("E2E_VOICE_ALLOW_HUB", raising=False)
    with pytest.raises(AudioSealLoadError, match="E2E_VOICE_ALLOW_HUB=1"):
        load_watermarker("audioseal")
    with pytest.raises(ValueError, match="unknown watermark backend"):
        load_watermarker("seal")


def test_cli_detect_and_embed_with_audioseal(
    ckpt_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from e2e_voice.safety.cli import watermark_main

    save_audio(tmp_path / "in.wav", _signal(10), SAMPLE_RATE)
    opts = ["--backend", "audioseal", "--model-path", str(ckpt_dir)]
    assert watermark_main(["embed", *opts, str(tmp_path / "in.wav"), str(tmp_path / "out.wav")]) == 0
    assert watermark_main(["detect", *opts, str(tmp_path / "out.wav")]) == 0
    assert "out.wav" in capsys.readouterr().out
    assert (
        watermark_main(
            [
                "detect",
                "--backend",
                "audioseal",
                "--model-path",
                str(tmp_path / "nope"),
                str(tmp_path / "in.wav"),
            ]
        )
        == 2
    )
    assert "facebook/audioseal" in capsys.readouterr().err
