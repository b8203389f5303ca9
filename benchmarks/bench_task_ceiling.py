"""How much the committed codec limits what a listener can hear of the task's answers (issue #41).

The end-to-end model speaks through the codec's decoder, so even a model that emitted exactly the codes
of the reference answer would be heard no better than the reference through the codec. This measures
that ceiling: answers of the task bank in the assistant's voice (Kokoro ``jm_kumo``, as the corpus), the
original and its codec resynthesis (whole-clip encode + decode), both transcribed by the bench's judge
(Whisper base, float32); key-phrase accuracy (``answer_correct``) and WER of each.

    python benchmarks/bench_task_ceiling.py [--answers 120] [--codec checkpoints/codec_cpu/codec.safetensors]

Writes runs/bench/task_ceiling.json and task_ceiling.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from e2e_voice.constants import REPO_ROOT, SAMPLE_RATE
from e2e_voice.data import task
from e2e_voice.data.align import trim
from e2e_voice.stt.whisper import WhisperSTT
from e2e_voice.tts.engines import VoiceSpec, synthesize
from eval.machine import context_line, machine_context
from eval.metrics import wer


def sample_items(n: int) -> list[task.TaskItem]:
    """``n`` items spread over the bank (every k-th, so each category is in proportion), fixed."""
    items = [i for i in task.task_items()]
    step = max(1, len(items) // n)
    return items[::step][:n]


def resynthesize(codec: Any, audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        codes = codec.encode(torch.from_numpy(audio)[None, None])
        return codec.decode(codes)[0, 0, : len(audio)].numpy()


def run(n: int, codec_path: str, voice: VoiceSpec) -> dict[str, Any]:
    from e2e_voice.codec.codec import load_codec

    items = sample_items(n)
    t0 = time.perf_counter()
    clips = [
        trim(synthesize(voice, item.answer))[0] for item in tqdm(items, desc="speak answers", unit="answer")
    ]
    codec = load_codec(codec_path).eval()
    resyn = [resynthesize(codec, c) for c in clips]
    del codec
    judge = WhisperSTT("whisper-base", compute_type="float32")  # after torch's work (see WhisperSTT)
    rows = []
    for item, orig, rec in tqdm(list(zip(items, clips, resyn)), desc="judge", unit="answer"):
        heard_o = judge.transcribe(orig, SAMPLE_RATE)
        heard_r = judge.transcribe(rec, SAMPLE_RATE)
        rows.append(
            {
                "category": item.category,
                "answer": item.answer,
                "key_words": list(item.key_words),
                "original": heard_o,
                "resynthesis": heard_r,
                "original_correct": task.answer_correct(heard_o, item.key_words),
                "resynthesis_correct": task.answer_correct(heard_r, item.key_words),
            }
        )
    refs = [r["answer"] for r in rows]
    summary = {
        "answers": len(rows),
        "voice": voice.describe(),
        "codec": codec_path,
        "key_phrase_accuracy": {
            k: float(np.mean([r[f"{k}_correct"] for r in rows])) for k in ("original", "resynthesis")
        },
        "wer": {k: wer(refs, [r[k] for r in rows]) for k in ("original", "resynthesis")},
        "by_category": {
            c: {
                "n": sum(r["category"] == c for r in rows),
                "resynthesis": float(np.mean([r["resynthesis_correct"] for r in rows if r["category"] == c])),
            }
            for c in task.CATEGORIES
            if any(r["category"] == c for r in rows)
        },
        "seconds": time.perf_counter() - t0,
    }
    return {"summary": summary, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        f"# Task answers through the codec ({s['answers']} answers, {s['voice']}, {s['codec']})",
        "",
        "| audio | key phrase heard | WER |",
        "| --- | --- | --- |",
    ]
    for k in ("original", "resynthesis"):
        lines.append(f"| {k} | {100 * s['key_phrase_accuracy'][k]:.1f} % | {100 * s['wer'][k]:.1f} % |")
    lines += ["", "| category | n | key phrase heard (resynthesis) |", "| --- | --- | --- |"]
    for c, v in s["by_category"].items():
        lines.append(f"| {c} | {v['n']} | {100 * v['resynthesis']:.1f} % |")
    lines += ["", f"Judge: Whisper base, float32. {s['seconds']:.0f} s.", "", context_line(s["machine"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=120)
    parser.add_argument("--codec", default="checkpoints/codec_cpu/codec.safetensors")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench")
    ns = parser.parse_args()
    torch.set_num_threads(2)
    machine = machine_context(2)
    result = run(ns.answers, ns.codec, VoiceSpec("kokoro", "jm_kumo"))
    result["summary"]["machine"] = machine
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "task_ceiling.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (ns.out / "task_ceiling.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
