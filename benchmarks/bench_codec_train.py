"""Codec training step time: the spectral codec's fixed STFT / inverse STFT by FFT vs as strided convs.

In training mode (outside streaming) ``CausalSTFT`` and ``CausalISTFT`` compute their frames by FFT; at
inference they keep the convs that also stream. This times the trainer's own steps
(``CodecTrainer.train_step``: a batch of crops, codec forward, the recipe's losses, backward, clipping,
AdamW) with the FFT path on and off, in alternating blocks in one process, so that both see the same
machine state. Random initial weights; crops from the repository's fixture dialogues (step time does
not depend on either). Distillation is off: its teacher features are precomputed in training and its
head is one 1x1 conv. Writes runs/bench/codec_train.json and .md, with the machine and how busy its
CPU was just before the timed blocks (``machine.py``).

    python benchmarks/bench_codec_train.py [--experiment codec_cpu_deep] [--threads 2] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from e2e_voice.codec.stft_layers import CausalISTFT, CausalSTFT
from e2e_voice.constants import CONFIG_DIR, REPO_ROOT
from eval.machine import context_line, machine_context
from train.codec import CodecTrainer

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "dialogues" / "manifest.jsonl"


def _set_fft(trainer: CodecTrainer, on: bool) -> None:
    for m in trainer.unwrapped.modules():
        if isinstance(m, CausalSTFT | CausalISTFT):
            m.fft_training = on


def run(experiment: str, threads: int, rounds: int, steps_per_block: int) -> dict[str, Any]:
    overrides = [
        f"+experiment={experiment}",
        f"threads={threads}",
        "data.files=[]",
        f"data.manifest={FIXTURE}",
        "loss.weights.distill_cos=0",
        "train.wandb.mode=disabled",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train_codec", overrides=overrides)
    if cfg.codec.get("frontend") != "spectral":
        raise SystemExit(f"{experiment} is not a spectral codec: it has no STFT layers to compare")
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = CodecTrainer(cfg, Path(run_dir))

        def step() -> float:
            t = time.perf_counter()
            trainer.train_step()
            return time.perf_counter() - t

        for on in (True, False):  # warm-up both paths
            _set_fft(trainer, on)
            for _ in range(3):
                step()
        machine = machine_context(threads)
        times: dict[str, list[float]] = {"fft": [], "conv": []}
        for r in range(rounds):
            order = ("fft", "conv") if r % 2 == 0 else ("conv", "fft")
            for name in order:
                _set_fft(trainer, name == "fft")
                times[name] += [step() for _ in range(steps_per_block)]
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "experiment": experiment,
        "batch": int(cfg.train.batch_size),
        "crop_seconds": float(cfg.data.crop_seconds),
        "steps_each": len(times["fft"]),
        "step_s_median": med,
        "step_s_mean": {k: statistics.fmean(v) for k, v in times.items()},
        "speedup": med["conv"] / med["fft"],
        "machine": machine,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="codec_cpu_deep")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6, help="alternating blocks of each path")
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    args = parser.parse_args()
    result = run(args.experiment, args.threads, args.rounds, args.steps)
    out = REPO_ROOT / "runs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    Path(out / "codec_train.json").write_text(json.dumps(result, indent=2))
    med, mean = result["step_s_median"], result["step_s_mean"]
    md = [
        f"# Codec training step: FFT vs conv STFT layers ({result['experiment']})",
        "",
        context_line(result["machine"]),
        "",
        f"Batch {result['batch']} x {result['crop_seconds']} s crops; {result['steps_each']} steps each,"
        " alternating blocks.",
        "",
        "| path | median step (s) | mean step (s) |",
        "|---|---|---|",
        f"| FFT (training default) | {med['fft']:.3f} | {mean['fft']:.3f} |",
        f"| strided convs | {med['conv']:.3f} | {mean['conv']:.3f} |",
        "",
        f"Speed-up (median conv / median FFT): **{result['speedup']:.2f}x**",
    ]
    Path(out / "codec_train.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
