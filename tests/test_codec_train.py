"""Codec training: a CPU smoke-train whose losses fall, exact resume, a real Whisper teacher, the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from e2e_voice.audio.io import save_audio
from e2e_voice.codec import load_codec
from e2e_voice.constants import CONFIG_DIR, SAMPLE_RATE
from tests.helpers import espeak_speech
from train.codec import CodecTrainer
from train.codec_data import CropSampler, find_audio, read_manifest
from train.codec_losses import DistillationHead
from train.teachers import WhisperEncoderTeacher

SENTENCES = ["A tiny corpus for the codec.", "Resume must continue exactly.", "Seven silver spoons."]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("codec_corpus")
    for i, text in enumerate(SENTENCES):
        save_audio(d / f"s{i}.wav", espeak_speech(text, 16000), 16000)  # any rate: the loader resamples
    return d


def _cfg(corpus: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "train_codec",
            overrides=[
                "+experiment=codec_debug",
                f"data.files=[{corpus}/*.wav]",
                "train.wandb.mode=disabled",
                "run_name=test",
                *overrides,
            ],
        )


def test_smoke_train_overfits_a_batch(corpus: Path, tmp_path: Path) -> None:
    cfg = _cfg(
        corpus, "loss.weights.distill_cos=0", "quantizer_dropout=0", "train.lr=3e-3", "train.warmup_steps=1"
    )
    trainer = CodecTrainer(cfg, tmp_path)
    batch = trainer.data.next_batch(2)
    mels = [trainer.train_step(batch)["rec/mel"] for _ in range(10)]
    logs = trainer.train_step(batch)
    assert {"rec/mel", "rec/l1", "vq/commit", "adv/gen", "adv/feat", "disc/loss"} <= set(logs)
    assert all(np.isfinite(v) for v in logs.values())
    assert np.mean(mels[-3:]) < 0.8 * np.mean(mels[:3]), mels


def _params(trainer: CodecTrainer) -> dict[str, torch.Tensor]:
    state = {f"codec.{k}": v for k, v in trainer.unwrapped.state_dict().items()}
    state.update({f"disc.{k}": v for k, v in trainer.disc.state_dict().items()})
    return state


def test_resume_equals_uninterrupted(corpus: Path, tmp_path: Path) -> None:
    # dropout on, so the resumed run must also draw the same number of levels per step
    overrides = ("loss.weights.distill_cos=0", "quantizer_dropout=0.7", "train.save_every=2")
    straight = CodecTrainer(_cfg(corpus, *overrides), tmp_path / "a")
    full = straight.fit(steps=3)

    first = CodecTrainer(_cfg(corpus, *overrides), tmp_path / "b")
    first.fit(steps=2)  # writes checkpoint.pt at step 2, then the process "dies"
    del first
    resumed = CodecTrainer(_cfg(corpus, *overrides), tmp_path / "b")
    history = resumed.fit(steps=3)
    assert resumed.step == 3
    drop = ("time/step_s",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in history] == [
        {k: v for k, v in h.items() if k not in drop} for h in full
    ]
    a, b = _params(straight), _params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sampler_state_round_trip() -> None:
    clips = [torch.randn(5000), torch.randn(300)]
    s1 = CropSampler(clips, 1920, seed=3)
    s1.next_batch(2)
    state = s1.state_dict()
    expected = s1.next_batch(3)
    s2 = CropSampler(clips, 1920, seed=99)
    s2.load_state_dict(state)
    assert torch.equal(s2.next_batch(3), expected)


def test_data_sources(tmp_path: Path, corpus: Path) -> None:
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(f'{{"audio": "{corpus}/s0.wav", "text": "x"}}\n{{"path": "{corpus}/s1.wav"}}\n')
    assert [p.name for p in read_manifest(manifest)] == ["s0.wav", "s1.wav"]
    assert len(find_audio([str(corpus / "*.wav")], str(manifest))) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file": "a.wav"}\n')
    with pytest.raises(ValueError, match="no audio key"):
        read_manifest(bad)
    with pytest.raises(FileNotFoundError, match="no audio found"):
        find_audio([str(tmp_path / "nothing*.wav")])


@pytest.mark.slow
def test_distillation_with_whisper_teacher(corpus: Path, tmp_path: Path) -> None:
    """The Whisper base encoder (bundle, CTranslate2) is a real teacher; the loss trains the encoder."""
    teacher = WhisperEncoderTeacher()
    audio = torch.from_numpy(espeak_speech("The teacher hears this sentence.", SAMPLE_RATE))
    x = audio[: 16 * 1920][None, None]  # [1, 1, T] 1.28 s
    feats = teacher(x)
    assert feats.shape[0] == 1 and feats.shape[-1] == teacher.dim == 512
    assert abs(feats.shape[1] - 64) <= 1  # 50 Hz
    silence = teacher(torch.zeros_like(x))
    assert not torch.allclose(feats, silence, atol=1e-2)  # it listens to the audio

    cfg = _cfg(corpus, "quantizer_dropout=0")
    trainer = CodecTrainer(cfg, tmp_path)
    assert trainer.teacher is not None and isinstance(trainer.distill, DistillationHead)
    logs = trainer.train_step()
    assert 0.0 < logs["distill/cos"] < 2.0
    codec = trainer.unwrapped
    codec.zero_grad()
    out = codec(x)
    loss = trainer.distill(out.semantic, feats)
    loss.backward()
    grad = codec.model.encoder.model[0].conv.conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.slow
def test_cli_train_codec(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from e2e_voice import cli

    monkeypatch.setattr(sys, "argv", ["e2e-voice"])
    code = cli.main(
        [
            "train-codec",
            "+experiment=codec_debug",
            f"data.files=[{corpus}/*.wav]",
            "train.steps=2",
            "train.wandb.mode=disabled",
            "loss.weights.distill_cos=0",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    assert code == 0
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "metrics.jsonl").is_file()
    codec = load_codec(tmp_path / "codec.safetensors")
    assert codec.num_codebooks == 4 and codec.arch["n_filters"] == 16
