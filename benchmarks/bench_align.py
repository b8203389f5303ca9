"""Error of the Whisper word-timestamp method against exact word-by-word ground truth, and its offset fit.

Each sentence is synthesized word by word (``concat``: exact boundaries by construction) with one voice
per engine; :meth:`WhisperAligner.align_many` (the generator's path: forced alignment, clips packed into
shared windows) aligns that audio to the known text and we compare the start and end of every word.

Whisper's times come early by a roughly constant amount per engine. The per-engine offset
(median signed error of starts and of ends) is fitted on one set of sentences (the template sentences)
and the error is reported, before and after that correction, on another (the user prompts), so the
numbers are not measured on the sentences the offset was fitted to. The fitted offsets are what
``alignment.offsets_s`` in ``configs/synth_data.yaml`` holds. Writes ``runs/bench/align.json`` and
``runs/bench/align.md``, with the machine and how busy its CPU was just before (``machine.py``; threads
there are Whisper's CPU threads). The errors do not depend on the load, only the ``seconds`` do.

    python benchmarks/bench_align.py [--sentences 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from e2e_voice.constants import REPO_ROOT
from e2e_voice.data import content
from e2e_voice.data.align import Timed, WhisperAligner, apply_offset, synthesize_concat
from e2e_voice.tts.engines import VoiceSpec
from eval.machine import context_line, machine_context

VOICES = (
    VoiceSpec("kokoro", "jm_kumo"),
    VoiceSpec("piper", "piper-en-us-joe"),
    VoiceSpec("espeak", "en-us+f2", 1.0, 50),
    VoiceSpec("flite", "slt"),
    VoiceSpec("festival", "kal_diphone"),
)


def _signed(got: list[list[Timed]], truth: list[list[Timed]]) -> tuple[np.ndarray, np.ndarray]:
    """(start errors, end errors) in seconds, truth minus aligned, over all words."""
    ds, de = [], []
    for g, t in zip(got, truth):
        assert [w for w, _, _ in g] == [w for w, _, _ in t], (g, t)
        ds += [b[1] - a[1] for a, b in zip(g, t)]
        de += [b[2] - a[2] for a, b in zip(g, t)]
    return np.array(ds), np.array(de)


def _stats(ds: np.ndarray, de: np.ndarray) -> dict[str, float]:
    both = np.abs(np.concatenate([ds, de]))
    return {
        "start_mean_abs_ms": round(1000 * float(np.abs(ds).mean()), 1),
        "start_bias_ms": round(-1000 * float(ds.mean()), 1),  # negative: aligned too early
        "boundary_mean_abs_ms": round(1000 * float(both.mean()), 1),
        "boundary_p90_ms": round(1000 * float(np.quantile(both, 0.9)), 1),
        "within_100ms": round(float(np.mean(both <= 0.1)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sentences", type=int, default=10, help="sentences per voice in each of the two sets"
    )
    args = parser.parse_args()
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    aligner = WhisperAligner(threads=os.cpu_count() or 1)
    fit_texts = list(content.TEMPLATE_SENTENCES[: args.sentences])
    test_texts = list(content.PROMPTS[: args.sentences])
    rows: list[dict[str, Any]] = []
    machine = machine_context(aligner.threads)
    t0 = time.perf_counter()
    for spec in VOICES:
        sets = {}
        for name, texts in (("fit", fit_texts), ("test", test_texts)):
            clips = [synthesize_concat(spec, text) for text in texts]
            got = aligner.align_many([(audio, text) for (audio, _), text in zip(clips, texts)])
            sets[name] = (got, [timed for _, timed in clips], [len(a) / 24_000 for a, _ in clips])
        ds, de = _signed(*sets["fit"][:2])
        offset = (round(float(np.median(ds)), 3), round(float(np.median(de)), 3))
        got, truth, lengths = sets["test"]
        fixed = [apply_offset(g, offset, n) for g, n in zip(got, lengths)]
        rows.append(
            {
                "engine": spec.engine,
                "voice": spec.describe(),
                "words": int(sum(len(t) for t in truth)),
                "offset_s": list(offset),
                "before": _stats(*_signed(got, truth)),
                "after": _stats(*_signed(fixed, truth)),
            }
        )
        print(rows[-1], flush=True)
    result = {
        "rows": rows,
        "seconds": time.perf_counter() - t0,
        "sentences_per_set": args.sentences,
        "model": aligner.model,
        "machine": machine,
    }
    out = REPO_ROOT / "runs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "align.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Word timestamps: Whisper forced alignment vs word-by-word ground truth (held-out sentences)",
        "",
        context_line(machine),
        "",
        "| voice | words | offset [start, end] s | start err ms before | after"
        " | boundary err ms before | after | within 100 ms after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['voice']} | {r['words']} | {r['offset_s']} | {r['before']['start_mean_abs_ms']}"
        f" | {r['after']['start_mean_abs_ms']} | {r['before']['boundary_mean_abs_ms']}"
        f" | {r['after']['boundary_mean_abs_ms']} | {100 * r['after']['within_100ms']:.0f}% |"
        for r in rows
    ]
    lines += ["", "alignment.offsets_s (configs/synth_data.yaml):"]
    lines += [f"  {r['engine']}: {r['offset_s']}" for r in rows]
    Path(out / "align.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
