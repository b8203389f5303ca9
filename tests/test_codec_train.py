"""Codec training: a CPU smoke-train whose losses fall, exact resume, a real Whisper teacher, the CLI."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from e2e_voice.audio.io import save_audio
from e2e_voice.codec import load_codec
from e2e_voice.codec.stft_layers import frame_spectrum
from e2e_voice.constants import CONFIG_DIR, SAMPLE_RATE
from tests.helpers import espeak_speech, recipe_changes
from train.codec import CodecTrainer
from train.codec_data import CropSampler, find_audio, read_manifest
from train.codec_losses import (
    DistillationHead,
    MultiScaleMelDiscriminator,
    ReconstructionLoss,
    SpectrumLoss,
    anti_wrap,
    build_discriminator,
    discriminator_loss,
    generator_losses,
)
from train.teachers import TeacherCache, WhisperEncoderTeacher

SENTENCES = ["A tiny corpus for the codec.", "Resume must continue exactly.", "Seven silver spoons."]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("codec_corpus")
    for i, text in enumerate(SENTENCES):
        save_audio(d / f"s{i}.wav", espeak_speech(text, 16000), 16000)  # any rate: the loader resamples
    return d


def _cfg(corpus: Path, *overrides: str, experiment: str = "codec_debug") -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "train_codec",
            overrides=[
                f"+experiment={experiment}",
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


MEL_DISC = ("disc.kind=mel", "disc.n_ffts=[256,512]", "disc.n_mels=[32,48]", "disc.filters=8")


SPEED = ("data.speed=[0.8,1.25]", "data.speed_prob=0.5")


@pytest.mark.parametrize("disc", [(), MEL_DISC, SPEED], ids=["stft_disc", "mel_disc", "speed_perturbed"])
def test_resume_equals_uninterrupted(corpus: Path, tmp_path: Path, disc: tuple[str, ...]) -> None:
    # dropout on, so the resumed run must also draw the same number of levels per step
    overrides = ("loss.weights.distill_cos=0", "quantizer_dropout=0.7", "train.save_every=2", *disc)
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
    # A listed source that is missing is an error even when the others are there.
    with pytest.raises(FileNotFoundError, match="matched no file"):
        find_audio([str(tmp_path / "nothing*.wav")], str(manifest))


@pytest.mark.slow
def test_distillation_with_whisper_teacher(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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

    # distill_cache: whole-clip features computed once in a child process; no teacher in the trainer.
    overrides = ("quantizer_dropout=0", "distill_cache=true", f"distill_cache_dir={tmp_path / 'features'}")
    cached = CodecTrainer(_cfg(corpus, *overrides), tmp_path / "cached")
    assert cached.teacher is None and cached.teacher_cache is not None
    here = TeacherCache.compute(teacher, cached.data.clips)
    assert len(here.features) == len(cached.teacher_cache.features) == len(SENTENCES)
    for a, b in zip(here.features, cached.teacher_cache.features, strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=0)
    first = cached.train_step()
    assert 0.0 < first["distill/cos"] < 2.0
    with pytest.raises(RuntimeError, match="distill_cache=false"):
        cached.train_step(x)

    # The next run over the same clips reads the features from distill_cache_dir, runs no teacher, and takes
    # the same first step.
    def no_teacher(*args: object, **kwargs: object) -> None:
        raise AssertionError("the teacher ran again although its features were on disk")

    monkeypatch.setattr(TeacherCache, "compute_in_subprocess", staticmethod(no_teacher))
    again = CodecTrainer(_cfg(corpus, *overrides), tmp_path / "again")
    assert again.teacher_cache is not None
    for a, b in zip(cached.teacher_cache.features, again.teacher_cache.features, strict=True):
        assert torch.equal(a, b)
    assert again.train_step() == first

    # Speed-perturbed crops take the same cached features, stretched over the span each crop was read from.
    sped = CodecTrainer(_cfg(corpus, *overrides, "data.speed=[1.3,1.3]"), tmp_path / "sped")
    assert sped.teacher_cache is not None
    asked: list[list[int] | None] = []
    crops = sped.teacher_cache.crops

    def spy(origins: list[tuple[int, int]], n: int, spans: list[int] | None = None) -> torch.Tensor:
        asked.append(None if spans is None else list(spans))
        return crops(origins, n, spans)

    monkeypatch.setattr(sped.teacher_cache, "crops", spy)
    logs = sped.train_step()
    crop = sped.data.crop
    assert asked == [[round(1.3 * crop)] * int(sped.cfg.train.batch_size)]
    assert 0.0 < logs["distill/cos"] < 2.0


@pytest.mark.slow
def test_gpu_recipe_trains_on_cpu_at_a_cpu_batch(corpus: Path, tmp_path: Path) -> None:
    """codec_gpu's model, losses, discriminator and teacher, on the CPU: what no GPU session has run yet."""
    cfg = _cfg(
        corpus,
        "device=cpu",
        "threads=2",
        "train.batch_size=2",
        "data.crop_seconds=0.96",
        "adv_start=0",  # the recipe switches its discriminator on at step 2,000
        "teacher.device=cpu",
        "teacher.compute_type=int8",
        experiment="codec_gpu",
    )
    trainer = CodecTrainer(cfg, tmp_path)
    codec = trainer.unwrapped
    assert codec.total_codebooks == 16 and codec.num_codebooks == 16  # trains every level
    assert trainer.accelerator.mixed_precision == "no"  # bf16 autocast only on CUDA
    steps = [trainer.train_step() for _ in range(2)]
    for logs in steps:
        assert {"rec/mel", "adv/gen", "adv/feat", "disc/loss", "distill/cos", "vq/commit"} <= set(logs)
        assert all(math.isfinite(v) for v in logs.values()), logs
    trainer.save()
    saved = load_codec(tmp_path / "codec.safetensors")
    assert saved.num_codebooks == 8 and saved.total_codebooks == 16 and saved.arch["n_filters"] == 64


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the GPU recipe's bf16 autocast and CUDA teacher need a GPU"
)
def test_gpu_recipe_on_cuda(corpus: Path, tmp_path: Path) -> None:
    """The recipe as written (device cuda, bf16, CTranslate2 teacher in float16), a few steps."""
    trainer = CodecTrainer(
        _cfg(corpus, "train.batch_size=4", "adv_start=1", experiment="codec_gpu"), tmp_path
    )
    assert trainer.accelerator.mixed_precision == "bf16"
    assert next(trainer.unwrapped.parameters()).is_cuda
    steps = [trainer.train_step() for _ in range(3)]
    assert "disc/loss" in steps[-1]
    assert all(math.isfinite(v) for logs in steps for v in logs.values()), steps
    trainer.save()
    assert load_codec(tmp_path / "codec.safetensors").total_codebooks == 16


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


def test_sampler_splits_channels_and_skips_silence(tmp_path: Path) -> None:
    """A two-channel conversation gives one clip per side; min_rms redraws silent crops."""
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    left = 0.3 * np.sin(2 * np.pi * 220 * t) * (t < 1.0)  # one second of tone, then silence
    right = np.zeros_like(t)
    save_audio(tmp_path / "conv.wav", np.stack([left, right]).astype(np.float32), SAMPLE_RATE)
    paths = [tmp_path / "conv.wav"]
    assert len(CropSampler.from_files(paths, 1920).clips) == 1
    split = CropSampler.from_files(paths, 1920, channels="split", seed=0)
    assert len(split.clips) == 2
    silent = (split.next_batch(256).square().mean(dim=-1).sqrt() < 1e-3).float().mean()
    assert silent > 0.8  # 1 s of sound in 8 s of audio: most random crops are silent
    picky = CropSampler.from_files(paths, 1920, channels="split", seed=0, min_rms=0.01)
    batch = picky.next_batch(256)
    loud = batch.square().mean(dim=-1).sqrt().flatten() >= 0.01
    assert loud.float().mean() > 2 * (1 - silent)  # ~1 - 0.87^10 = 75% loud, instead of ~13%
    assert all(i == 0 and start < SAMPLE_RATE for (i, start), ok in zip(picky.last_origins, loud) if ok)
    with pytest.raises(ValueError, match="'mix' or 'split'"):
        CropSampler.from_files(paths, 1920, channels="left")


def test_sampler_redraw_start_gives_each_clip_its_share() -> None:
    """redraw=clip favours clips with more sound; redraw=start keeps the drawn clip and moves the crop."""
    n = 8 * SAMPLE_RATE
    t = torch.arange(n) / SAMPLE_RATE
    busy = 0.3 * torch.sin(2 * torch.pi * 220 * t) * (t < 6.0)  # sound 3/4 of the time
    sparse = 0.3 * torch.sin(2 * torch.pi * 330 * t) * (t > 7.0)  # sound 1/8 of the time
    shares, loud_share = {}, {}
    for redraw in ("clip", "start"):
        sampler = CropSampler([busy, sparse], 1920, seed=0, min_rms=0.01, redraw=redraw)
        batch = sampler.next_batch(2000)
        clips = torch.tensor([i for i, _ in sampler.last_origins])
        loud = batch.square().mean(dim=-1).sqrt().flatten() >= 0.01
        shares[redraw] = float((clips == 1).float().mean())
        loud_share[redraw] = float(loud.float().mean())
    # clip: a quiet draw of the sparse clip is mostly replaced by the busy one (~1/8 vs ~7/8 of the crops).
    assert shares["clip"] < 0.25, shares
    # start: half the crops stay in the sparse clip, ~1 - (7/8)^10 = 74 % of them on its sound.
    assert 0.45 < shares["start"] < 0.55, shares
    assert loud_share["start"] > 0.8, loud_share
    with pytest.raises(ValueError, match="'clip' or 'start'"):
        CropSampler([busy], 1920, redraw="speech")


def test_sampler_redraw_clip_is_the_committed_codecs_sequence() -> None:
    """The default draws the crops v10 was trained on: the same generator calls as before redraw existed."""
    g = torch.Generator().manual_seed(1)
    clips = [torch.randn(3 * SAMPLE_RATE, generator=g) * s for s in (0.001, 0.02, 0.005)]
    sampler = CropSampler(clips, 1920, seed=3, min_rms=0.01)
    sampler.next_batch(64)
    gen, expected = torch.Generator().manual_seed(3), []
    for _ in range(64):  # the loop as written before the option: every try draws a clip, then a start
        for _ in range(10):
            i = int(torch.randint(3, (1,), generator=gen))
            start = int(torch.randint(3 * SAMPLE_RATE - 1920 + 1, (1,), generator=gen))
            if float(clips[i][start : start + 1920].square().mean().sqrt()) >= 0.01:
                break
        expected.append((i, start))
    assert sampler.last_origins == expected


def test_teacher_cache_matches_crops() -> None:
    """Cached whole-clip features are cut at each crop's origin (50 Hz, 480 samples a frame)."""

    class Ramp:  # feature t of a clip = the audio sample at the start of frame t (tracks positions)
        dim = 2

        def __call__(self, audio: torch.Tensor) -> torch.Tensor:
            frames = audio[0, 0, ::480][: audio.shape[-1] // 480]
            return torch.stack([frames, -frames], dim=-1)[None]

    clips = [torch.arange(3 * SAMPLE_RATE, dtype=torch.float32) / SAMPLE_RATE, torch.ones(5000)]
    cache = TeacherCache.compute(Ramp(), clips, window_s=1.0)  # several windows per clip are stitched
    assert cache.features[0].shape == (150, 2) and cache.features[1].shape == (10, 2)
    out = cache.crops([(0, 48_000), (1, 0)], 1920)
    assert out.shape == (2, 4, 2)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([2.0, 2.02, 2.04, 2.06]), atol=2e-3, rtol=0)
    assert torch.equal(out[1, :, 0], torch.ones(4))


def test_spectrum_loss_is_zero_for_the_true_spectrum() -> None:
    n_fft, hop = 960, 240
    x = torch.randn(2, 1, 32 * hop) * 0.1
    target = torch.stft(
        torch.nn.functional.pad(x[:, 0], (0, n_fft - hop)),
        n_fft,
        hop,
        window=torch.hann_window(n_fft),
        center=False,
        return_complex=True,
    )
    exact = torch.cat([torch.log(target.abs().clamp(min=1e-5)), torch.angle(target) + 2 * torch.pi], 1)
    loss = SpectrumLoss(n_fft, hop)
    zero = loss(x, exact)
    assert zero["spec/amp"] < 1e-4 and zero["spec/phase"] < 1e-3  # a 2 pi offset is no error
    noisy = exact.clone()
    noisy[:, n_fft // 2 + 1 :] = torch.rand_like(noisy[:, n_fft // 2 + 1 :]) * 2 * torch.pi
    assert loss(x, noisy)["spec/phase"] > 0.5
    assert float(anti_wrap(torch.tensor(2 * torch.pi - 0.1))) == pytest.approx(0.1, abs=1e-5)


def test_loss_floors_ignore_what_lies_beneath_them_and_default_to_the_committed_losses() -> None:
    """``loss.mel_floor`` / ``loss.spec_floor``: differences below the floor cost nothing, above it do."""
    torch.manual_seed(0)
    n_fft, hop = 960, 240
    speech = torch.from_numpy(espeak_speech("Quiet noise under speech.", SAMPLE_RATE))[None, None]
    hiss = torch.randn_like(speech) * 1e-4  # its mel bands peak near 10^-3.6, under a 1e-3 floor
    loud = torch.randn_like(speech) * 1e-2
    rec, floored = ReconstructionLoss(SAMPLE_RATE), ReconstructionLoss(SAMPLE_RATE, floor=1e-3)
    quiet, noisy = torch.zeros_like(speech), speech + loud
    assert float(rec(quiet, hiss)["rec/mel"]) > 0.5  # the default floor (1e-5) sees the hiss
    assert float(floored(quiet, hiss)["rec/mel"]) == 0.0
    assert float(floored(speech, noisy)["rec/mel"]) > 0.01  # audible noise still costs
    assert float(floored(speech, noisy)["rec/mel"]) < float(rec(speech, noisy)["rec/mel"])
    with pytest.raises(ValueError, match="mel_floor must be > 0"):
        ReconstructionLoss(SAMPLE_RATE, floor=0.0)

    target = frame_spectrum(speech, n_fft, hop)
    log_mag = torch.log(target.abs().clamp(min=1e-5))
    pred = torch.cat([log_mag, torch.angle(target)], 1)
    deep = pred.clone()
    bins = n_fft // 2 + 1
    deep[:, :bins] = torch.where(log_mag < math.log(0.05), log_mag - 5.0, log_mag)  # wrong only below 0.05
    default, spec_floored = SpectrumLoss(n_fft, hop), SpectrumLoss(n_fft, hop, floor=0.05)
    assert float(default(speech, deep)["spec/amp"]) > 1.0
    assert float(spec_floored(speech, deep)["spec/amp"]) < 1e-5
    shifted = pred.clone()
    shifted[:, :bins] += 1.0  # every bin 1 (natural log) too loud
    assert float(spec_floored(speech, shifted)["spec/amp"]) > 0.1
    assert float(default(speech, pred)["spec/amp"]) < 1e-5  # None is the committed loss: exact is 0
    with pytest.raises(ValueError, match="spec_floor must be > 0"):
        SpectrumLoss(n_fft, hop, floor=-1.0)


def test_mel_discriminator_learns_and_passes_gradients() -> None:
    """A few updates separate speech from its time-smeared copy; the generator's losses reach the audio."""
    torch.manual_seed(0)
    speech = torch.from_numpy(espeak_speech("Sharp edges in time make speech clear.", SAMPLE_RATE))
    real = speech[None, None, : 2 * SAMPLE_RATE].clone()  # [1, 1, T]
    # The codec's failure mode in miniature: the same sound, its envelope blurred over ~40 ms.
    kernel = torch.ones(1, 1, 961) / 961
    envelope = torch.nn.functional.conv1d(real.abs(), kernel, padding=480)
    fake = (torch.randn_like(real) * envelope * 1.25).requires_grad_()
    disc = MultiScaleMelDiscriminator((256, 512), (32, 48), SAMPLE_RATE, filters=16)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = discriminator_loss(disc(real), disc(fake.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    real_out, fake_out = disc(real), disc(fake)
    assert all(r[0].mean() > f[0].mean() for r, f in zip(real_out, fake_out, strict=True))
    assert [len(feats) for _, feats in fake_out] == [5, 5]  # features of every layer, for feature matching
    adv, feat = generator_losses(real_out, fake_out)
    (adv + feat).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_discriminator_config_errors() -> None:
    with pytest.raises(ValueError, match="'stft' or 'mel'"):
        build_discriminator("wave", (512,), 8, SAMPLE_RATE)
    with pytest.raises(ValueError, match="same length"):
        build_discriminator("mel", (512, 1024), 8, SAMPLE_RATE, (64,))
    assert isinstance(build_discriminator("mel", (512,), 8, SAMPLE_RATE, (64,)), MultiScaleMelDiscriminator)


# Every codec recipe variant against the recipe it builds on: exactly these leaves differ (EXPERIMENTS.md
# compares their runs, so a change that slips into a variant would make that comparison meaningless).
RECIPE_CHANGES = [
    pytest.param(  # the cheap log-mel discriminator from step 2,000
        "codec_cpu",
        "codec_cpu_gan",
        {
            "adv_start": (None, 2000),
            "disc.kind": ("stft", "mel"),
            "disc.filters": (16, 64),
            "disc.n_mels": ([], [64, 80]),
        },
        id="gan",
    ),
    pytest.param(  # the many-voice speech set added to the data
        "codec_cpu",
        "codec_cpu_voices",
        {"data.files": ([], ["data/generated/codec_voices/*.wav"]), "seed": (2, 0)},
        id="voices",
    ),
    pytest.param(  # the voices recipe with a corpus share
        "codec_cpu_voices",
        "codec_cpu_voices_weighted",
        {"data.files_share": (None, 0.25), "seed": (0, 2)},
        id="voices_weighted",
    ),
    pytest.param(  # twice the transformer layers (v6)
        "codec_cpu", "codec_cpu_deep", {"codec.transformer_layers": (2, 4)}, id="deep"
    ),
    pytest.param(  # the many-voice recipe with 4 layers
        "codec_cpu_voices",
        "codec_cpu_deep_voices",
        {"codec.transformer_layers": (2, 4), "seed": (0, 2)},
        id="deep_voices",
    ),
    pytest.param(  # 6 decoder layers
        "codec_cpu_deep",
        "codec_cpu_deep_dec6",
        {"codec.decoder_transformer_layers": (None, 6)},
        id="dec6",
    ),
    pytest.param(  # 6 encoder + 2 decoder layers
        "codec_cpu_deep",
        "codec_cpu_deep_enc6",
        {"codec.transformer_layers": (4, 6), "codec.decoder_transformer_layers": (None, 2)},
        id="enc6",
    ),
    pytest.param(
        "codec_cpu_deep", "codec_cpu_deep_phase01", {"loss.weights.spec_phase": (1.0, 0.1)}, id="phase01"
    ),
    pytest.param(
        "codec_cpu_deep", "codec_cpu_deep_phase3", {"loss.weights.spec_phase": (1.0, 3.0)}, id="phase3"
    ),
    pytest.param(  # no quantizer dropout (v7)
        "codec_cpu_deep", "codec_cpu_deep_qd0", {"quantizer_dropout": (0.25, 0.0)}, id="qd0"
    ),
    pytest.param(  # 4 x 2.56 s crops instead of 8 x 1.28 s
        "codec_cpu_deep_qd0",
        "codec_cpu_deep_qd0_crop256",
        {"data.crop_seconds": (1.28, 2.56), "train.batch_size": (8, 4)},
        id="crop256",
    ),
    pytest.param(  # 16 x 0.64 s crops instead of 8 x 1.28 s
        "codec_cpu_deep_qd0",
        "codec_cpu_deep_qd0_crop064",
        {"data.crop_seconds": (1.28, 0.64), "train.batch_size": (8, 16)},
        id="crop064",
    ),
    pytest.param(  # the magnitude losses floored ~60 dB below the loudest speech (v8)
        "codec_cpu_deep_qd0",
        "codec_cpu_deep_qd0_floor60",
        {"loss.mel_floor": (1e-5, 1e-3), "loss.spec_floor": (None, 0.05)},
        id="floor60",
    ),
    pytest.param(  # both floors 20 dB higher, ~40 dB below the loudest speech
        "codec_cpu_deep_qd0_floor60",
        "codec_cpu_deep_qd0_floor40",
        {"loss.mel_floor": (1e-3, 1e-2), "loss.spec_floor": (0.05, 0.5)},
        id="floor40",
    ),
    pytest.param(  # both floors 20 dB lower, ~80 dB below the loudest speech (v9)
        "codec_cpu_deep_qd0_floor60",
        "codec_cpu_deep_qd0_floor80",
        {"loss.mel_floor": (1e-3, 1e-4), "loss.spec_floor": (0.05, 0.005)},
        id="floor80",
    ),
    pytest.param(  # 2,000 more steps: the rest of the CPU recipe's hour
        "codec_cpu_deep_qd0_floor80",
        "codec_cpu_deep_qd0_floor80_long",
        {"train.steps": (9500, 11500)},
        id="floor80_long",
    ),
    pytest.param(  # v10's recipe, also writing two weight averages (the training itself is unchanged)
        "codec_cpu_deep_qd0_floor80",
        "codec_cpu_deep_qd0_floor80_ema",
        {"ema_decays": ([], [0.999, 0.9997])},
        id="floor80_ema",
    ),
    pytest.param(  # v10's recipe with three averages the warm-up cap lets apart (0.99, 0.998, 0.999)
        "codec_cpu_deep_qd0_floor80",
        "codec_cpu_deep_qd0_floor80_ema3",
        {"ema_decays": ([], [0.99, 0.998, 0.999])},
        id="floor80_ema3",
    ),
    pytest.param(  # v10's recipe, a quiet crop redrawing only its start: every channel its share of crops
        "codec_cpu_deep_qd0_floor80",
        "codec_cpu_deep_qd0_floor80_balanced",
        {"data.redraw": ("clip", "start")},
        id="floor80_balanced",
    ),
    pytest.param(  # v10's recipe at twice the peak learning rate
        "codec_cpu_deep_qd0_floor80",
        "codec_cpu_deep_qd0_floor80_lr2x",
        {"train.lr": (1.0e-3, 2.0e-3), "disc.lr": (1.0e-3, 2.0e-3)},  # disc.lr follows; no discriminator here
        id="floor80_lr2x",
    ),
    pytest.param(  # v10's recipe at half the peak learning rate
        "codec_cpu_deep_qd0_floor80",
        "codec_cpu_deep_qd0_floor80_lrhalf",
        {"train.lr": (1.0e-3, 5.0e-4), "disc.lr": (1.0e-3, 5.0e-4)},
        id="floor80_lrhalf",
    ),
    pytest.param(  # v10's recipe with speed perturbation of half the crops
        "codec_cpu_deep_qd0_floor80",
        "codec_cpu_deep_qd0_floor80_speed",
        {"data.speed": (None, [0.85, 1.15]), "data.speed_prob": (1.0, 0.5)},
        id="floor80_speed",
    ),
    pytest.param(  # the same, leaning upwards, on three crops in four
        "codec_cpu_deep_qd0_floor80",
        "codec_cpu_deep_qd0_floor80_speedup",
        {"data.speed": (None, [0.9, 1.4]), "data.speed_prob": (1.0, 0.75)},
        id="floor80_speedup",
    ),
]


@pytest.mark.parametrize("base, recipe, changes", RECIPE_CHANGES)
def test_recipe_changes_only_what_it_says(base: str, recipe: str, changes: dict) -> None:
    """configs/experiment/<recipe>.yaml differs from <base> in exactly ``changes`` and its run name."""
    assert recipe_changes(base, recipe) == {**changes, "run_name": (base, recipe)}


def test_weighted_sampler_follows_weights_and_resumes() -> None:
    clips = [torch.zeros(4000), torch.ones(4000), torch.full((4000,), 2.0)]
    sampler = CropSampler(clips, 1920, seed=0, weights=[6.0, 1.0, 1.0])
    sampler.next_batch(1000)
    counts = np.bincount([i for i, _ in sampler.last_origins], minlength=3) / 1000
    assert abs(counts[0] - 0.75) < 0.05 and abs(counts[1] - 0.125) < 0.04, counts
    state = sampler.state_dict()
    expected = sampler.next_batch(4)
    again = CropSampler(clips, 1920, seed=7, weights=[6.0, 1.0, 1.0])
    again.load_state_dict(state)
    assert torch.equal(again.next_batch(4), expected)
    with pytest.raises(ValueError, match="one positive weight per clip"):
        CropSampler(clips, 1920, weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="one positive weight per clip"):
        CropSampler(clips, 1920, weights=[1.0, 0.0, 1.0])


def test_files_share_splits_crops_between_corpus_and_files(tmp_path: Path) -> None:
    """data.files_share: one two-channel corpus file, four mono set files; a quarter of crops from the set."""
    from train.codec import _sources

    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    save_audio(tmp_path / "conv.wav", np.stack([tone, tone]), SAMPLE_RATE)
    (tmp_path / "set").mkdir()
    for i in range(4):
        save_audio(tmp_path / "set" / f"v{i}.wav", tone, SAMPLE_RATE)
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(f'{{"audio": "{tmp_path}/conv.wav"}}\n')
    data = OmegaConf.create(
        {"files": [f"{tmp_path}/set/*.wav"], "manifest": str(manifest), "audio_key": None}
    )
    data.files_share = 0.25
    paths, weights = _sources(data)
    assert paths[0].name == "conv.wav" and weights is not None
    sampler = CropSampler.from_files(paths, 1920, seed=0, channels="split", file_weights=weights)
    assert len(sampler.clips) == 6  # both channels of the corpus file, four set files
    sampler.next_batch(2000)
    from_set = np.mean([i >= 2 for i, _ in sampler.last_origins])
    assert abs(from_set - 0.25) < 0.04, from_set  # uniform over clips it would be 4 / 6
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="files_share"):
            _sources(OmegaConf.merge(data, {"files_share": bad}))
    with pytest.raises(ValueError, match="files_share"):
        _sources(OmegaConf.merge(data, {"manifest": None}))
    assert _sources(OmegaConf.merge(data, {"files_share": None}))[1] is None
    with pytest.raises(ValueError, match="no corpus left"):  # the set is the corpus too
        _sources(OmegaConf.merge(data, {"files": [f"{tmp_path}/*.wav", f"{tmp_path}/set/*.wav"]}))


def test_weight_averages_follow_the_schedule_and_reject_bad_decays() -> None:
    from train.ema import WeightAverages

    lin = torch.nn.Linear(2, 1)
    lin.register_buffer("count", torch.tensor(3))  # integer buffers are not averaged
    ema = WeightAverages([0.5, 0.99])
    expected: dict[float, torch.Tensor] = {}
    for n in range(1, 5):
        with torch.no_grad():
            lin.weight.add_(1.0)
        ema.update(lin)
        for d in (0.5, 0.99):  # the first update copies the weights; later ones follow the schedule
            keep = min(d, (1 + n) / (10 + n)) if n > 1 else 0.0
            expected[d] = keep * expected.get(d, lin.weight.detach()) + (1 - keep) * lin.weight.detach()
    for d, tag in ((0.5, "ema0.5"), (0.99, "ema0.99")):
        state = ema.averaged_state(tag, lin)
        assert torch.allclose(state["weight"], expected[d]), (d, state["weight"], expected[d])
        assert int(state["count"]) == 3
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        WeightAverages([1.0])
    with pytest.raises(ValueError, match="twice"):
        WeightAverages([0.9, 0.90])
    with pytest.raises(KeyError, match="keeps"):
        ema.averaged_state("ema0.9", lin)


def test_weight_averages_leave_the_run_unchanged_resume_and_export(corpus: Path, tmp_path: Path) -> None:
    """ema_decays: the live weights equal a run without them; the averages resume exactly and export.

    On the committed codec's spectral architecture (``codec=cpu``). The averages are written from their
    own tensors: a first version deep-copied the model to save them, which stopped a real run of the
    recipe at its first save (a module held a non-leaf tensor; this smaller run's copy went through).
    """
    from train.export import export_codec

    overrides = ("codec=cpu", "loss.weights.distill_cos=0", "quantizer_dropout=0.7", "train.save_every=2")
    plain = CodecTrainer(_cfg(corpus, *overrides), tmp_path / "plain")
    plain.fit(steps=3)
    averaged = CodecTrainer(_cfg(corpus, *overrides, "ema_decays=[0.5,0.9]"), tmp_path / "ema")
    averaged.fit(steps=3)
    a, b = _params(plain), _params(averaged)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert averaged.ema is not None and averaged.ema.updates == 3
    live = averaged.unwrapped.state_dict()
    moved = [k for k, v in averaged.ema.averages["ema0.9"].items() if not torch.equal(v, live[k])]
    assert moved, "the average never differed from the live weights"

    first = CodecTrainer(_cfg(corpus, *overrides, "ema_decays=[0.5,0.9]"), tmp_path / "resumed")
    first.fit(steps=2)
    del first
    resumed = CodecTrainer(_cfg(corpus, *overrides, "ema_decays=[0.5,0.9]"), tmp_path / "resumed")
    resumed.fit(steps=3)
    assert resumed.ema is not None and resumed.ema.updates == 3
    for tag, avg in averaged.ema.averages.items():
        for k, v in avg.items():
            assert torch.equal(v, resumed.ema.averages[tag][k]), (tag, k)

    # The saved average is what the trainer holds, and export picks it by decay.
    out = export_codec(tmp_path / "ema", tmp_path / "avg.safetensors", dtype=None, ema=0.9)
    loaded = load_codec(out).state_dict()
    for k, v in averaged.ema.averages["ema0.9"].items():
        assert torch.equal(loaded[k].float(), v.float()), k
    with pytest.raises(FileNotFoundError, match=r"codec_ema0\.5\.safetensors"):
        export_codec(tmp_path / "ema", tmp_path / "x.safetensors", ema=0.99)
    with pytest.raises(FileNotFoundError, match="train with ema_decays"):
        export_codec(tmp_path / "plain", tmp_path / "x.safetensors", ema=0.9)
    # Adding averages to a run whose checkpoint has none is an error, not a silent fresh start.
    with pytest.raises(ValueError, match="without weight averages"):
        CodecTrainer(_cfg(corpus, *overrides, "ema_decays=[0.9]"), tmp_path / "plain").fit(steps=4)
