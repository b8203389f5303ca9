"""LM generation step per 80 ms frame and training throughput, on this machine's CPU.

    python benchmarks/bench_lm.py [--threads 1] [--frames 40]

Threads default to 1: on the shared 2-core development machine (load average 6-10), 2 threads per
process oversubscribed the cores and measured 10-25x slower (tiny B=1: 375 ms vs 29.5 ms per frame).
On an idle machine compare ``--threads 2``.

Measures (random weights; the step cost does not depend on them):
* ``LMStep.step`` (moshi's ``LMGen``: temporal transformer + depformer over n_q codebooks) for the
  ``tiny`` config at B=1 and B=8, and a SmolLM2-shaped temporal transformer (d=576, 30 layers,
  9/3 heads) at B=1, fp32; median over ``--frames`` steps after warm-up;
* training frames per second for ``tiny`` (forward + backward + AdamW, B=8, 64 frames).
Writes ``runs/bench/lm.json`` and ``runs/bench/lm.md``, with the machine and how busy its CPU was just
before (``machine.py``). Anchors (ANCHORS.md, 2 cores): tiny 15 ms at B=1, 24 ms at B=8; SmolLM2-shaped
86 ms fp32 at B=1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from moshi.utils.compile import no_compile
from omegaconf import OmegaConf
from tqdm import tqdm

from e2e_voice.constants import CONFIG_DIR, REPO_ROOT
from e2e_voice.lm.generate import LMStep, Sampling
from e2e_voice.lm.loss import lm_loss
from e2e_voice.lm.model import build_lm, count_parameters, lm_kwargs
from eval.machine import context_line, machine_context

ARCH = (
    "card", "text_card", "dim", "num_layers", "num_heads", "ff_hidden", "depformer_dim",
    "depformer_num_layers", "depformer_num_heads", "depformer_ff_hidden", "context",
)  # fmt: skip
FRAME_MS = 80.0


def tiny_kwargs(n_q: int = 8) -> dict[str, Any]:
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "lm" / "tiny.yaml"))
    assert isinstance(cfg, dict)
    return lm_kwargs(n_q=n_q, **{k: cfg[k] for k in ARCH})


def smol_shaped_kwargs(n_q: int = 8) -> dict[str, Any]:
    # SmolLM2-135M's temporal transformer with random weights (no bundle needed for a timing).
    return lm_kwargs(
        n_q=n_q, card=2048, text_card=49152, dim=576, num_layers=30, num_heads=9, num_kv_heads=3,
        ff_hidden=1536, depformer_dim=256, depformer_num_layers=4, depformer_num_heads=4,
        depformer_ff_hidden=672, max_period=100_000.0, rope="rope_concat", context=375,
    )  # fmt: skip


def time_steps(kwargs: dict[str, Any], batch: int, frames: int, warmup: int = 5) -> dict[str, float]:
    torch.manual_seed(0)
    lm = build_lm(kwargs)
    step = LMStep(lm, Sampling())
    n_q = step.n_q
    times = []
    with step.streaming(batch):
        for t in tqdm(range(warmup + frames), desc=f"step d={kwargs['dim']} B={batch}", leave=False):
            user = torch.randint(0, kwargs["card"], (batch, n_q, 1))
            t0 = time.perf_counter()
            step.step(user)
            if t >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    med = statistics.median(times)
    return {
        "params_m": count_parameters(lm) / 1e6,
        "batch": batch,
        "median_ms": med,
        "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))],
        "real_time_factor": med / FRAME_MS,
    }


def time_training(
    kwargs: dict[str, Any], batch: int = 8, seq_len: int = 64, steps: int = 4
) -> dict[str, float]:
    torch.manual_seed(0)
    lm = build_lm(kwargs)
    lm.train()
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)
    codes = torch.randint(0, 2000, (batch, 1 + 2 * lm.dep_q, seq_len))
    times = []
    for _ in tqdm(range(steps + 1), desc="train tiny", leave=False):
        t0 = time.perf_counter()
        loss = lm_loss(lm(codes), codes)
        loss.total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times[1:])
    frames = batch * seq_len
    return {"batch": batch, "seq_len": seq_len, "step_s": med, "frames_per_s": frames / med,
            "tokens_per_s": frames * (1 + 2 * lm.dep_q) / med}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_context(args.threads)
    rows: dict[str, Any] = {}
    with no_compile():
        rows["tiny_B1"] = time_steps(tiny_kwargs(), 1, args.frames)
        rows["tiny_B8"] = time_steps(tiny_kwargs(), 8, args.frames)
        rows["smol_shaped_B1"] = time_steps(smol_shaped_kwargs(), 1, max(10, args.frames // 2))
        train = time_training(tiny_kwargs())
    result = {
        "machine": machine,
        "step": rows,
        "train_tiny": train,
        "anchors_ms": {"tiny_B1": 15, "tiny_B8": 24, "smol_shaped_B1": 86},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lm.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# LM step per 80 ms frame (CPU, fp32, random weights)",
        "",
        context_line(machine),
        "",
        "| model | params | batch | median ms/frame | p90 ms | x real time | anchor ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['params_m']:.1f}M | {r['batch']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} "
            f"| {r['real_time_factor']:.2f} | {result['anchors_ms'][name]} |"
        )
    lines += [
        "",
        f"Training tiny (B={train['batch']}, {train['seq_len']} frames, fwd+bwd+AdamW): "
        f"{train['step_s']:.2f} s/step, {train['frames_per_s']:.0f} frames/s, "
        f"{train['tokens_per_s']:.0f} tokens/s",
    ]
    (args.out / "lm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
