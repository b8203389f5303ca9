"""Speed arithmetic shared by the benchmarks and the GPU check: engine tick timing, model FLOPs and MFU.

Kept in the library (no train/ or eval/ imports) so that ``benchmarks/bench_engine.py`` and
``scripts/gpu_check.py`` time the engine the same way, and so that the MFU arithmetic has one tested home.

MFU (model FLOPs utilisation) = the FLOPs the model needs per second at the measured throughput, over the
card's dense bf16 peak. Training FLOPs of the joint LM follow the usual ``6 * N * tokens`` rule (2 for the
forward matmuls, 4 for the backward), where a token is one 12.5 Hz frame (one position of the temporal
transformer) and ``N`` counts the parameters that take part in a matmul: embedding tables are lookups and
are left out. With ``depformer_weights_per_step`` each frame's depformer steps use each step's weights
once, so every non-embedding parameter is used once per frame and the rule holds for the depformer too.
Attention's score and value products (``~12 * layers * dim * context`` per token) are not counted, so the
figure is a slight underestimate, as MFU conventionally is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE

FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE  # one tick must fit in this to keep up (80 ms)
P90_BUDGET_SECONDS = 0.1  # a sustained batch also keeps its 90th percentile tick under 100 ms

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's data sheets. Matched against
# torch.cuda.get_device_name() in order, so the more specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (the "H100 80GB HBM3" name)
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
)


def peak_bf16_flops(device_name: str) -> float | None:
    """The card's dense bf16 peak in FLOP/s, or None for a card not in :data:`PEAK_BF16_TFLOPS`."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def matmul_flops(m: int, k: int, n: int) -> int:
    """FLOPs of an ``[M, K] x [K, N]`` product: one multiply and one add per output per K."""
    return 2 * m * k * n


def mfu(flops: float, seconds: float, peak_flops: float) -> float:
    """Achieved FLOP/s over the peak: ``flops / seconds / peak_flops``."""
    if seconds <= 0 or peak_flops <= 0:
        raise ValueError(f"seconds and peak_flops must be positive, got {seconds} and {peak_flops}")
    return flops / seconds / peak_flops


def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters that take part in matmuls: all of them but embedding tables (lookups, no FLOPs)."""
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return sum(p.numel() for p in model.parameters()) - embedding


def lm_train_flops(matmul_params: int, frames: float) -> float:
    """Training FLOPs of the joint LM for ``frames`` frames: ``6 * N * frames`` (see the module docstring)."""
    return 6.0 * matmul_params * frames


def tick_row(times: Sequence[float]) -> dict[str, Any]:
    """p50 / p90 of measured tick times (seconds) and whether they keep up with real time."""
    p50, p90 = np.percentile(np.asarray(times, dtype=np.float64), [50, 90])
    return {
        "tick_ms_p50": 1000 * float(p50),
        "tick_ms_p90": 1000 * float(p90),
        "sustained": bool(p50 <= FRAME_SECONDS and p90 <= P90_BUDGET_SECONDS),
    }


def time_ticks(
    tick: Callable[[dict[int, np.ndarray]], Any],
    frames: Callable[[int], dict[int, np.ndarray]],
    ticks: int,
    warmup: int = 3,
) -> list[float]:
    """Wall-clock seconds of ``ticks`` engine ticks after ``warmup`` untimed ones.

    ``frames(t)`` gives tick ``t``'s user frames (slot -> float32 ``[FRAME_SIZE]``), built outside the
    timed region. The engine's tick reads its outputs back to the host (the text ids), so on a GPU the
    time includes the device's work, not only its launch. The warm-up ticks absorb the allocations,
    moshi's lazy kernel compilation and the CUDA graph captures.
    """
    times = []
    for t in range(warmup + ticks):
        batch = frames(t)
        t0 = time.perf_counter()
        tick(batch)
        if t >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def max_sustained(rows: Sequence[dict[str, Any]]) -> int:
    """The largest batch among ``rows`` whose ticks keep up (0 when none does)."""
    return max((int(r["batch"]) for r in rows if r.get("sustained")), default=0)
