"""Speed of word alignment: one Whisper transcription per clip (the generator's method before batching)
against forced alignment with the clips of a conversation packed into shared windows (now).

Uses clips already in the synth-data clip cache (real Kokoro answers and user turns, with their text;
with an empty cache it synthesizes user prompts with espeak-ng and template answers with Kokoro),
groups them ``--per-conversation`` at a time like a conversation, and times both methods in the same
process, alternating, so a shared machine loads both alike. Prints CPU and wall seconds, the ratio, and
how far the two methods' word times are apart; writes ``runs/bench/align_speed.{json,md}``, with the
machine and how busy its CPU was just before timing (``machine.py``; threads there are Whisper's).

    python benchmarks/bench_align_speed.py [--clips 18] [--per-conversation 6] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from e2e_voice.assets.registry import cache_dir
from e2e_voice.constants import REPO_ROOT
from e2e_voice.data import content
from e2e_voice.data.align import WhisperAligner, trim
from e2e_voice.tts.engines import VoiceSpec, synthesize
from eval.machine import context_line, machine_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=18)
    parser.add_argument("--per-conversation", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=cache_dir() / "synth" / "tts")
    args = parser.parse_args()
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    clips = []
    for path in sorted(args.cache.glob("*.npz"))[: args.clips]:
        with np.load(path) as z:
            words = json.loads(str(z["words"]))
            clips.append((z["audio"].astype(np.float32) / 32767, " ".join(w for w, _, _ in words)))
    if not clips:  # nothing cached yet: a user prompt (espeak-ng) and a template answer (Kokoro) in turn
        for k in range(args.clips):
            spec, bank = (
                (VoiceSpec("espeak", "en-us+f2"), content.PROMPTS)
                if k % 2 == 0
                else (VoiceSpec("kokoro", "jm_kumo"), content.TEMPLATE_SENTENCES)
            )
            text = bank[k // 2 % len(bank)]
            clips.append((trim(synthesize(spec, text))[0], text))
    aligner = WhisperAligner(threads=os.cpu_count() or 1)
    aligner.align(*clips[0])  # warm up
    n = args.per_conversation
    groups = [clips[i : i + n] for i in range(0, len(clips), n)]
    cost = {"per_clip": [0.0, 0.0], "batched": [0.0, 0.0]}  # [cpu s, wall s]
    old: list = []
    new: list = []
    machine = machine_context(aligner.threads)
    for _ in range(args.repeats):
        for name in cost:
            c, w = time.process_time(), time.perf_counter()
            if name == "per_clip":
                old = [aligner.transcribe_align(a, t) for a, t in clips]
            else:
                new = [timed for g in groups for timed in aligner.align_many(g)]
            cost[name][0] += time.process_time() - c
            cost[name][1] += time.perf_counter() - w
    diff = np.array([abs(x[k] - y[k]) for o, m in zip(old, new) for x, y in zip(o, m) for k in (1, 2)])
    audio_s = sum(len(a) for a, _ in clips) / 24_000
    row = {
        "clips": len(clips),
        "audio_s": round(audio_s, 1),
        "per_conversation": n,
        "repeats": args.repeats,
        "per_clip_cpu_s": round(cost["per_clip"][0], 2),
        "batched_cpu_s": round(cost["batched"][0], 2),
        "cpu_ratio": round(cost["per_clip"][0] / cost["batched"][0], 2),
        "per_clip_wall_s": round(cost["per_clip"][1], 2),
        "batched_wall_s": round(cost["batched"][1], 2),
        "wall_ratio": round(cost["per_clip"][1] / cost["batched"][1], 2),
        "old_vs_new_median_ms": round(1000 * float(np.median(diff)), 1),
        "old_vs_new_mean_ms": round(1000 * float(np.mean(diff)), 1),
    }
    print(json.dumps(row))
    out = REPO_ROOT / "runs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "align_speed.json").write_text(json.dumps({**row, "machine": machine}, indent=2))
    lines = ["# Word alignment speed: per-clip transcription vs batched forced alignment", ""]
    lines += [context_line(machine), ""]
    lines += ["| measure | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in row.items())]
    (out / "align_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
