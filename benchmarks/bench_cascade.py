"""Voice-to-voice latency of the cascade in real time, broken down by stage.

Plays a recording of ~10 spoken questions (espeak-ng, each followed by silence) through the cascade in
real-time mode (steps paced at 80 ms of wall time, workers in threads) with the offline defaults, once
per setting: Kokoro with phrase-level TTS (the default), Piper with phrase-level TTS, Kokoro with
sentence-level TTS (what a naive cascade does), and Kokoro without first-audio priority (the LLM keeps
generating while the first phrase is synthesized). Latency = first assistant audio out - onset of user
silence, as Pipecat and LiveKit define it. Writes ``runs/bench/cascade.json`` and ``cascade.md``, with
the machine and how busy its CPU was just before the first setting (``machine.py``).

    python benchmarks/bench_cascade.py [--turns 10] [--settings kokoro-phrase piper-phrase ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from e2e_voice.constants import CONFIG_DIR, REPO_ROOT, SAMPLE_RATE
from eval.machine import context_line, machine_context

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky?",
    "Why do we need sleep?",
    "What is the biggest ocean?",
    "How do plants make food?",
    "What is the tallest animal?",
    "Where do penguins live?",
    "What is a good breakfast?",
    "How far away is the moon?",
    "What is the boiling point of water?",
    "Who wrote Romeo and Juliet?",
]

SETTINGS: dict[str, list[str]] = {
    "kokoro-phrase": ["cascade/tts=kokoro", "cascade.aggregation.mode=phrase"],
    "piper-phrase": ["cascade/tts=piper", "cascade.aggregation.mode=phrase"],
    "kokoro-sentence": ["cascade/tts=kokoro", "cascade.aggregation.mode=sentence"],
    # ablation: the LLM keeps generating while the first phrase is synthesized
    "kokoro-phrase-no-priority": [
        "cascade/tts=kokoro",
        "cascade.aggregation.mode=phrase",
        "cascade.first_audio_priority=false",
    ],
}

STAGE_ORDER = [
    "endpoint",
    "stt",
    "llm_ttft",
    "first_sentence",
    "tts_first_audio",
    "playout",
    "voice_to_voice",
    "first_audio_ready",
]
# Recomputed from the per-turn timestamps, so a saved cascade.json can be re-summarised (--report-only).
_SPANS = {
    "endpoint": ("silence_onset", "vad_end"),
    "stt": ("vad_end", "stt_final"),
    "llm_ttft": ("stt_final", "llm_first_token"),
    "first_sentence": ("llm_first_token", "first_sentence"),
    "tts_first_audio": ("first_sentence", "tts_first_audio"),
    "playout": ("tts_first_audio", "first_audio_out"),
    "voice_to_voice": ("silence_onset", "first_audio_out"),
    "first_audio_ready": ("silence_onset", "tts_first_audio"),
}


def summarize(turns: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """p50/p90 (ms) and count of every stage over the turns where both its ends were reached."""
    stages: dict[str, dict[str, float | None]] = {}
    for stage in STAGE_ORDER:
        a, b = _SPANS[stage]
        values = [t[b] - t[a] for t in turns if not t["failed"] and t[a] is not None and t[b] is not None]
        stages[stage] = {
            "p50_ms": float(1000 * np.percentile(values, 50)) if values else None,
            "p90_ms": float(1000 * np.percentile(values, 90)) if values else None,
            "n": len(values),
        }
    return stages


def user_recording(turns: int, gap_s: float) -> np.ndarray:
    """``turns`` questions, each followed by ``gap_s`` of silence (room for the answer to start)."""
    from e2e_voice.audio.io import resample
    from e2e_voice.tts import espeak

    parts = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)]
    for q in (QUESTIONS * 2)[:turns]:
        audio, sr = espeak.synthesize(q)
        parts += [resample(audio, sr, SAMPLE_RATE), np.zeros(int(gap_s * SAMPLE_RATE), np.float32)]
    return np.concatenate(parts)


def run_setting(name: str, overrides: list[str], user: np.ndarray) -> dict[str, Any]:
    """Build the cascade with ``overrides`` and play ``user`` through it in real time."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from e2e_voice.converse import converse

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("converse", overrides=overrides)
    t = time.perf_counter()
    system = instantiate(cfg.system, realtime=True)
    load_s = time.perf_counter() - t
    try:
        result = converse(system, user, realtime=True, progress=False)
    finally:
        system.close()
    turns = result.metrics
    return {
        "setting": name,
        "overrides": overrides,
        "tts": cfg.cascade.tts._target_,
        "aggregation": cfg.cascade.aggregation.mode,
        "llm": f"{cfg.cascade.llm.model} {cfg.cascade.llm.dtype}",
        "load_and_warmup_s": load_s,
        "turns": len(turns),
        "failed_turns": sum(t["failed"] for t in turns),
        "late_frames": result.late_frames,
        "stages": summarize(turns),
        "per_turn": turns,
    }


def markdown(results: list[dict[str, Any]], context: str, machine: dict[str, Any] | None) -> str:
    lines = [
        "# Cascade voice-to-voice latency (real-time mode)",
        "",
        *([context_line(machine), ""] if machine else []),  # files saved before machine.py lack it
        context,
        "",
        "Latency = first assistant audio out - onset of user silence (Pipecat / LiveKit definition).",
        "Stages: endpoint = VAD silence wait; stt = Whisper final; llm_ttft = first token after the",
        "transcript; first_sentence = first phrase released to TTS; tts_first_audio = synthesis of that",
        "phrase; playout = until the next 80 ms step returns it. voice_to_voice counts only the turns whose",
        "audio played before the next question cut in ('answered'), so it is biased towards the fast",
        "turns; first_audio_ready (silence onset -> first phrase synthesized) counts every turn that got",
        "that far, cut or not, and is the fairer central figure when turns overlap.",
        "",
        "| setting | answered | " + " | ".join(f"{s} p50/p90 ms" for s in STAGE_ORDER) + " |",
        "| --- | --- | " + " | ".join("---" for _ in STAGE_ORDER) + " |",
    ]
    for r in results:
        cells = []
        for s in STAGE_ORDER:
            st = r["stages"][s]
            cells.append("-" if st["p50_ms"] is None else f"{st['p50_ms']:.0f} / {st['p90_ms']:.0f}")
        n = r["stages"]["voice_to_voice"]["n"]
        lines.append(f"| {r['setting']} | {n}/{r['turns']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "For reference (shared/ANCHORS.md): production cascades claim 500-800 ms voice-to-voice (Pipecat,",
        "on GPUs / cloud APIs); the naive floor on these 2-core machines (VAD 200 ms + STT + LLM first 8",
        "tokens + TTS first sentence) is ~1.3 s with Piper and ~2.0 s with Kokoro.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=10)
    # Turns must not overlap: an answer still being synthesized when the next question ends would queue
    # that question behind it and measure the backlog, not the pipeline. 32-token answers (~1-2
    # sentences) fit in 8 s even when the shared CPU is slow.
    parser.add_argument("--gap", type=float, default=8.0, help="silence after each question (s)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="LLM answer cap")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench"))
    parser.add_argument("--report-only", action="store_true", help="re-summarise the saved cascade.json")
    args = parser.parse_args()
    out = Path(args.out)
    if args.report_only:
        saved = json.loads((out / "cascade.json").read_text())
        for r in saved["results"]:
            r["stages"] = summarize(r["per_turn"])
        (out / "cascade.json").write_text(json.dumps(saved, indent=2))
        md = markdown(saved["results"], saved["context"], saved.get("machine"))
        (out / "cascade.md").write_text(md)
        print(md)
        return
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(2)
    user = user_recording(args.turns, args.gap)
    machine = machine_context(2)
    results = []
    for name in args.settings:
        print(f"== {name}: {args.turns} turns, {len(user) / SAMPLE_RATE:.0f} s in real time")
        overrides = [*SETTINGS[name], f"cascade.llm.max_new_tokens={args.max_new_tokens}"]
        results.append(run_setting(name, overrides, user))
        v2v = results[-1]["stages"]["voice_to_voice"]
        print(f"   voice-to-voice p50 {v2v['p50_ms']:.0f} ms, p90 {v2v['p90_ms']:.0f} ms")
    context = (
        f"{args.turns} espeak-ng questions, {args.gap:.0f} s apart; Whisper base int8,"
        f" SmolLM2-135M bf16 (answers capped at {args.max_new_tokens} tokens)."
    )
    out.mkdir(parents=True, exist_ok=True)
    saved = {"machine": machine, "context": context, "results": results}
    (out / "cascade.json").write_text(json.dumps(saved, indent=2))
    md = markdown(results, context, machine)
    (out / "cascade.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
