"""The engine step of scripts/gpu_check.py: tick times per batch size, CUDA graphs on and off.

The model is built once per shape (7B random weights take seconds to initialise and 15 GB of memory);
each (graphs, batch) pair gets a fresh engine over it, since the streaming state, KV caches and captured
graphs are sized for one batch. Random user frames: a tick's cost does not depend on what is said.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Any

import numpy as np
from gpu_check_steps import GPU_BATCHES, Step


def kv_cache_bytes(lm: Any, batch: int) -> int:
    """The temporal transformer's KV caches for ``batch`` conversations (keys and values, every layer)."""
    layers = len(lm.transformer.layers)
    dtype_bytes = next(lm.parameters()).element_size()
    return 2 * layers * batch * int(lm.context) * int(lm.dim) * dtype_bytes


def measure_batch(codec: Any, lm: Any, batch: int, ticks: int, graphs: bool) -> dict[str, Any]:
    """Tick times of a fresh engine with ``batch`` live conversations."""
    import torch
    from moshi.utils.compile import no_cuda_graph

    from e2e_voice.constants import FRAME_SIZE
    from e2e_voice.engine import DuplexEngine
    from e2e_voice.lm.generate import Sampling
    from e2e_voice.perf import tick_row, time_ticks

    engine = DuplexEngine(codec, lm, max_conversations=batch, sampling=Sampling())
    try:
        slots = [engine.open() for _ in range(batch)]  # unseeded: seeded rows turn the graphs off
        rng = np.random.default_rng(batch)

        def frames(t: int) -> dict[int, np.ndarray]:
            return {s.index: rng.normal(0, 0.1, FRAME_SIZE).astype(np.float32) for s in slots}

        with contextlib.nullcontext() if graphs else no_cuda_graph():
            times = time_ticks(engine.tick, frames, ticks)
        return {"batch": batch, **tick_row(times), "ticks": ticks}
    finally:
        engine.shutdown()
        if engine.codec.is_streaming:
            engine.codec._stop_streaming()
        del engine
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def engine(step: Step, shape: str) -> None:
    """Every batch size up to 64 (2 in a dry run), graphs on and off, until the time box runs short."""
    import torch

    from e2e_voice.engine_shapes import engine_parts
    from e2e_voice.lm.model import count_parameters
    from e2e_voice.perf import FRAME_SECONDS, max_sustained

    on_gpu = torch.cuda.is_available() and not step.dry_run
    device, dtype = ("cuda", torch.bfloat16) if on_gpu else ("cpu", torch.float32)
    built = (shape + "-toy" if shape == "moshiko" else "toy") if step.dry_run else shape
    batches, ticks = (GPU_BATCHES, 30) if on_gpu else ((1, 2), 3)
    torch.set_num_threads(1 if step.dry_run else torch.get_num_threads())
    codec, lm = engine_parts(built, device, dtype)
    step.save(
        shape=built,
        lm_params=count_parameters(lm),
        lm_dtype=str(dtype).removeprefix("torch."),
        tick_budget_ms=1000 * FRAME_SECONDS,
        rows=[],
        **step.device(),
    )
    rows: list[dict[str, Any]] = []
    full = False  # once a batch does not fit, larger ones are not tried
    for batch in batches:  # both modes at each size, so a short time box still compares them
        for graphs in (True, False):
            # On a CPU moshi's graph wrappers run eagerly: both modes then time the same code.
            row: dict[str, Any] = {"graphs": graphs, "batch": batch}
            need = kv_cache_bytes(lm, batch)
            if full or (on_gpu and need > 0.9 * torch.cuda.mem_get_info()[0]):
                row["skipped"] = f"KV caches need {need / 2**30:.1f} GiB, more than the free memory"
            elif step.left() < 20:
                row["skipped"] = "time box"
            else:
                try:
                    row |= measure_batch(codec, lm, batch, ticks, graphs)
                except torch.cuda.OutOfMemoryError:
                    row["skipped"] = "out of GPU memory"
            full = full or ("skipped" in row and "time" not in row["skipped"])
            rows.append(row)
            step.save(rows=rows)
            print(row, flush=True)
    best = {
        f"graphs_{'on' if g else 'off'}": max_sustained([r for r in rows if r["graphs"] == g]) for g in (1, 0)
    }
    step.save(
        rows=rows, max_sustained=best, status="ok" if any("tick_ms_p50" in r for r in rows) else "failed"
    )
