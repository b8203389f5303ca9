"""The training steps of scripts/gpu_check.py: the two GPU recipes for a wall-clock budget, then throughput
and MFU from the metrics they log.

Neither recipe's corpus travels to a bare GPU machine (the task corpus is 20 h of audio), and speed does not
depend on what the data says, so each step makes its own:

- train-lm reads a streams file of uniformly random tokens (text ids below ``lm.text_card``, audio codes
  below ``lm.card``), 2000 frames (160 s) per conversation, written with ``train.lm_data.save_streams``,
  and the committed tiny tokenizer (checkpoints/lm_tiny/tokenizer.model, 1000 pieces);
- train-codec reads a generated corpus of synthetic voiced audio (harmonic stacks on a gliding pitch,
  syllable-rate envelopes, a little noise), 24 kHz WAV files.

The trainers run as they would from the command line (``python -m train.lm``), with no validation and no
checkpoints inside the budget, and are stopped when it ends (a dry run stops them after a few steps).
The codec's semantic distillation is off (``loss.weights.distill_cos=0``): its Whisper teacher's weights
and CTranslate2 are not on a bare machine, so the codec's figures leave out the teacher's forward pass.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import wave
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
from gpu_check_steps import ROOT, Step

SAMPLE_RATE = 24000
# The tiny LM needs a sentencepiece model; the committed one (1000 pieces) fits lm_task's text_card.
TOKENIZER = ROOT / "checkpoints" / "lm_tiny" / "tokenizer.model"
LM_DRY = [
    "device=cpu",
    "train.precision=fp32",
    "lm.dim=32",
    "lm.num_layers=1",
    "lm.num_heads=2",
    "lm.ff_hidden=84",
    "lm.depformer_dim=16",
    "lm.depformer_num_layers=1",
    "lm.depformer_num_heads=2",
    "lm.depformer_ff_hidden=42",
    "lm_data.seq_len=16",
    "train.batch_size=2",
    "lm_train.stop_after=4",
    "train.log_every=1",
    "lm_train.num_threads=1",
]
CODEC_DRY = [
    "device=cpu",
    "train.precision=fp32",
    "threads=1",
    "codec.n_filters=4",
    "codec.transformer_layers=1",
    "codec.quantizer_levels=8",
    "codec.codebook_size=64",
    "data.crop_seconds=0.32",
    "train.batch_size=2",
    "train.steps=4",
    "train.log_every=1",
]


def compose(config: str, overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from e2e_voice.constants import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config, overrides=overrides)


def run_trainer(step: Step, module: str, overrides: list[str], log: Path) -> dict[str, Any]:
    """``python -m <module> overrides`` until it ends or the step has 15 s left; how it ended."""
    cmd = [sys.executable, "-m", module, *overrides]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=max(step.left() - 15, 1))
            ended = "finished" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            ended = "stopped at the wall-clock budget"
    tail = log.read_text(errors="replace").splitlines()[-12:]
    print("\n".join(tail))
    return {"command": " ".join(cmd[1:]), "ended": ended, **({"log_tail": tail} if "failed" in ended else {})}


def read_metrics(path: Path, key: str) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if key in r]


def steady_frames_per_s(rows: list[dict[str, Any]], frames_per_step: int) -> float | None:
    """Frames per second between the first and the last logged step, leaving the warm-up out.

    The trainer logs the cumulative ``frames / elapsed`` since its first step; with every crop full (the
    random streams have no padding) a step is exactly ``batch * seq_len`` frames, which gives each log's
    elapsed time, hence the rate between two logs.
    """
    if len(rows) < 2:
        return float(rows[0]["train/frames_per_s"]) if rows else None
    (a, b) = rows[0], rows[-1]
    fa, fb = a["step"] * frames_per_step, b["step"] * frames_per_step
    ta, tb = fa / a["train/frames_per_s"], fb / b["train/frames_per_s"]
    return (fb - fa) / (tb - ta) if tb > ta else None


def random_streams(path: Path, n_q: int, text_card: int, card: int, conversations: int, frames: int) -> None:
    from train.lm_data import save_streams

    rng = np.random.default_rng(0)
    streams = []
    for _ in range(conversations):
        text = rng.integers(0, text_card, (1, frames))
        audio = rng.integers(0, card, (2 * n_q, frames))
        streams.append(np.concatenate([text, audio]))
    import torch

    meta = {"n_q": n_q, "n_valid": 1, "source": "scripts/gpu_check.py: uniformly random tokens"}
    save_streams(path, [torch.from_numpy(s) for s in streams], meta)


def train_lm(step: Step) -> None:
    """train-lm +experiment=lm_task_gpu on random streams; frames/s, tokens/s and MFU (6 N frames)."""
    from omegaconf import OmegaConf

    from e2e_voice.lm.builders import build_from_config
    from e2e_voice.lm.model import count_parameters
    from e2e_voice.perf import lm_train_flops, matmul_parameters

    streams = step.work / "lm_streams.pt"
    run_dir = step.work / "lm_run"
    overrides = [
        "+experiment=lm_task_gpu",
        f"lm_data.streams={streams}",
        "lm_data.manifests=null",
        f"lm.tokenizer={TOKENIZER}",
        f"out_dir={run_dir}",
        "train.wandb.mode=disabled",
        "lm_train.resume=false",
        "lm_train.val_every=0",
        "lm_train.best_metric=null",
        "train.log_every=10",
        "train.save_every=100000000",
        *(LM_DRY if step.dry_run else []),
    ]
    cfg = compose("train_lm", overrides)
    lm_cfg: dict[str, Any] = OmegaConf.to_container(cfg.lm, resolve=True)  # type: ignore[assignment]
    n_q, batch, seq_len = int(lm_cfg["n_q"]), int(cfg.train.batch_size), int(cfg.lm_data.seq_len)
    random_streams(
        streams, n_q, int(lm_cfg["text_card"]), int(lm_cfg["card"]), 6 if step.dry_run else 34, 2000
    )
    model = build_from_config(lm_cfg, tokenizer_path=TOKENIZER).model
    n_matmul = matmul_parameters(model)
    step.save(
        recipe="lm_task_gpu",
        data="random token streams (scripts/gpu_check_train.py), 2000 frames per conversation",
        params=count_parameters(model),
        matmul_params=n_matmul,
        batch_size=batch,
        seq_len=seq_len,
        streams_per_frame=1 + 2 * n_q,
        **step.device(),
    )
    del model
    step.save(**run_trainer(step, "train.lm", overrides, step.work / "train_lm_trainer.log"))
    rows = read_metrics(run_dir / "metrics.jsonl", "train/frames_per_s")
    fps = steady_frames_per_s(rows, batch * seq_len)
    if fps is None:
        step.save(status="failed", reason="the trainer logged no throughput")
        return
    step.save(
        steps=rows[-1]["step"],
        last_loss=rows[-1].get("train/loss"),
        frames_per_s=fps,
        tokens_per_s=fps * (1 + 2 * n_q),
        **flops_and_mfu(step, lm_train_flops(n_matmul, fps)),
    )


def flops_and_mfu(step: Step, flops_per_s: float) -> dict[str, Any]:
    from e2e_voice.perf import mfu

    peak = step.result.get("peak_bf16_tflops")
    return {
        "model_tflops_per_s": flops_per_s / 1e12,
        "mfu": mfu(flops_per_s, 1.0, peak * 1e12) if peak else None,
    }


def synthetic_voice(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Harmonics of a gliding 90-260 Hz pitch under a ~4 Hz syllable envelope, plus faint noise."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = rng.uniform(90, 260) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 16))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t), 0, None) ** 2
    return (0.2 * voice * envelope + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def write_corpus(folder: Path, files: int, seconds: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        pcm = (np.clip(synthetic_voice(seconds, rng), -1, 1) * 32767).astype("<i2")
        with wave.open(str(folder / f"voice{i:02d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm.tobytes())


def codec_forward_flops(cfg: Any, crop: int, device: str) -> int:
    """FLOPs of the codec's training forward pass on one crop, counted by torch (convs and matmuls)."""
    import torch
    from hydra.utils import instantiate
    from torch.utils.flop_counter import FlopCounterMode

    codec = instantiate(cfg.codec, _convert_="all").to(device)
    codec.set_num_codebooks(codec.total_codebooks)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        codec(torch.zeros(1, 1, crop, device=device))
    return int(counter.get_total_flops())


def train_codec(step: Step) -> None:
    """train-codec +experiment=codec_gpu on a generated corpus; audio seconds/s, frames/s and MFU.

    Training FLOPs per crop are taken as 3x the forward pass counted by torch's FlopCounterMode (backward
    ~2x forward). The STFT losses and the discriminator (off until ``adv_start``, step 2000 in the recipe)
    are not counted, so the MFU is a lower bound of the work done.
    """
    import torch

    corpus = step.work / "codec_corpus"
    run_dir = step.work / "codec_run"
    write_corpus(corpus, 2 if step.dry_run else 16, 1.0 if step.dry_run else 8.0)
    overrides = [
        "+experiment=codec_gpu",
        f"data.files=[{corpus}/*.wav]",
        "loss.weights.distill_cos=0",
        "train.wandb.mode=disabled",
        "run_name=gpu_check",
        f"hydra.run.dir={run_dir}",
        "resume=false",
        "train.log_every=5",
        "train.save_every=100000000",
        *(CODEC_DRY if step.dry_run else []),
    ]
    cfg = compose("train_codec", overrides)
    frame_rate, frame_size = 12.5, SAMPLE_RATE // 12.5
    crop = int(round(float(cfg.data.crop_seconds) * frame_rate) * frame_size)
    batch = int(cfg.train.batch_size)
    device = "cuda" if torch.cuda.is_available() and not step.dry_run else "cpu"
    forward = codec_forward_flops(cfg, crop, device)
    step.save(
        recipe="codec_gpu",
        data="generated corpus of synthetic voiced audio (scripts/gpu_check_train.py), 24 kHz WAV",
        batch_size=batch,
        crop_samples=crop,
        levels=int(cfg.codec.quantizer_levels),
        forward_gflops_per_crop=forward / 1e9,
        **step.device(),
    )
    step.save(**run_trainer(step, "train.codec", overrides, step.work / "train_codec_trainer.log"))
    rows = read_metrics(run_dir / "metrics.jsonl", "time/step_s")
    if not rows:
        step.save(status="failed", reason="the trainer logged no step times")
        return
    step_s = median(r["time/step_s"] for r in (rows[1:] or rows))  # the first logged step warms up
    audio_s_per_s = batch * crop / SAMPLE_RATE / step_s
    step.save(
        steps=rows[-1]["step"],
        last_mel_loss=rows[-1].get("rec/mel"),
        step_s_median=step_s,
        audio_s_per_s=audio_s_per_s,
        frames_per_s=audio_s_per_s * frame_rate,
        tokens_per_s=audio_s_per_s * frame_rate * int(cfg.codec.quantizer_levels),
        **flops_and_mfu(step, 3.0 * forward * batch / step_s),
    )
