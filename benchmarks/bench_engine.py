"""How many conversations the batched engine sustains in real time.

    .venv/bin/python benchmarks/bench_engine.py [--batches 1 2 4 8 16] [--ticks 40]
    .venv/bin/python benchmarks/bench_engine.py --codecs committed   # the committed trained pair


One tick = encode every live user frame, step the LM, decode every reply (80 ms of audio for each
conversation). A batch size is sustained when the median tick fits in 80 ms and the 90th percentile in
100 ms. Weights are random (speed does not depend on them) at the shapes of the tiny LM recipe
(`configs/lm/tiny.yaml`) with the tiny and small codecs; ``committed`` runs the trained, committed
pair instead (checkpoints/lm_tiny with checkpoints/codec_cpu), fed with real speech. moshi's own
server serves one conversation per process (it holds a lock around its single LMGen), so its figure
is 1 when a tick fits in 80 ms.
Writes runs/bench/engine.json and runs/bench/engine.md, with the machine and how busy its CPU was just
before (``machine.py``): the tick times are only meaningful on an otherwise idle CPU (another job made 24
conversations measure 90.5 ms a tick instead of 74.4), so a busy start is warned about on stderr and in
the report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from e2e_voice.constants import FRAME_SIZE
from e2e_voice.engine import DuplexEngine
from e2e_voice.engine_shapes import engine_parts
from e2e_voice.lm.generate import Sampling
from e2e_voice.perf import max_sustained, tick_row, time_ticks
from eval.machine import context_line, machine_context

# The bench's codec names -> the engine shapes of e2e_voice.engine_shapes (the tiny LM over each codec).
SHAPES = {"tiny": "tiny-tinycodec", "small": "tiny"}
COMMITTED_LM = "checkpoints/lm_tiny"


def build(codec_name: str, batch: int) -> DuplexEngine:
    torch.manual_seed(0)
    if codec_name == "committed":
        from e2e_voice.engine import load_engine

        return load_engine(COMMITTED_LM, max_conversations=batch)
    codec, lm = engine_parts(SHAPES[codec_name])
    return DuplexEngine(codec, lm, max_conversations=batch, sampling=Sampling())


def measure(codec_name: str, batch: int, ticks: int) -> dict[str, float]:
    engine = build(codec_name, batch)
    slots = [engine.open() for _ in range(batch)]
    rng = np.random.default_rng(0)
    speech = _speech() if codec_name == "committed" else None

    def frames(t: int) -> dict[int, np.ndarray]:
        if speech is not None:  # a trained model: real speech, each conversation at another offset
            n = len(speech) // FRAME_SIZE
            return {s.index: speech[((t + 7 * s.index) % n) * FRAME_SIZE :][:FRAME_SIZE] for s in slots}
        return {s.index: rng.normal(0, 0.1, FRAME_SIZE).astype(np.float32) for s in slots}

    return {"batch": batch, **tick_row(time_ticks(engine.tick, frames, ticks))}


def _speech() -> np.ndarray:
    from e2e_voice.audio.io import load_audio

    audio_dir = Path("tests/fixtures/dialogues/audio")
    return np.concatenate([load_audio(p)[0] for p in sorted(audio_dir.glob("*.flac"))]).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--codecs", nargs="+", default=["tiny", "small"])
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_context(args.threads)
    rows = []
    for codec_name in args.codecs:
        for b in tqdm(args.batches, desc=f"engine ({codec_name} codec)"):
            rows.append({"codec": codec_name, **measure(codec_name, b, args.ticks)})
    best = {c: max_sustained([r for r in rows if r["codec"] == c]) for c in args.codecs}
    result = {
        "machine": machine,
        "rows": rows,
        "max_sustained_conversations": best,
        "moshi_server_conversations_per_process": 1,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "engine_committed" if args.codecs == ["committed"] else "engine"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Batched engine, tiny LM ({'trained' if name == 'engine_committed' else 'random weights'}),"
        f" {args.threads} CPU threads",
        "",
        context_line(machine),
        "",
        "| codec | conversations | tick p50 (ms) | tick p90 (ms) | real time |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {r['codec']} | {r['batch']} | {r['tick_ms_p50']:.1f} | {r['tick_ms_p90']:.1f} |"
            f" {'yes' if r['sustained'] else 'no'} |"
            for r in rows
        ],
        "",
        "Sustained in real time (p50 <= 80 ms, p90 <= 100 ms): "
        + ", ".join(f"{c} codec: {n}" for c, n in best.items())
        + ". moshi's server: 1 conversation per process.",
    ]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
