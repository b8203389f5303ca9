"""Error of the Whisper word-timestamp method against exact word-by-word ground truth.

Each sentence is synthesized word by word (``concat``: exact boundaries by construction) with several
voices; :class:`WhisperAligner` then aligns that audio to the known text and we compare the start and
end of every word. Writes ``runs/bench/align.json`` and ``runs/bench/align.md``.

    python benchmarks/bench_align.py [--sentences 12]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from e2e_voice.constants import REPO_ROOT, SAMPLE_RATE
from e2e_voice.data import content
from e2e_voice.data.align import WhisperAligner, synthesize_concat
from e2e_voice.tts.engines import VoiceSpec

VOICES = (
    VoiceSpec("kokoro", "jm_kumo"),
    VoiceSpec("piper", "piper-en-us-joe"),
    VoiceSpec("espeak", "en-us+f2", 1.0, 50),
    VoiceSpec("flite", "slt"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=12, help="sentences per voice")
    args = parser.parse_args()
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    aligner = WhisperAligner(threads=os.cpu_count() or 1)
    texts = [*content.TEMPLATE_SENTENCES, *content.PROMPTS][: args.sentences]
    rows = []
    t0 = time.perf_counter()
    for spec in VOICES:
        errors: list[float] = []
        seconds = 0.0
        for text in texts:
            audio, truth = synthesize_concat(spec, text)
            seconds += len(audio) / SAMPLE_RATE
            got = aligner.align(audio, text)
            assert [w for w, _, _ in got] == [w for w, _, _ in truth], (got, truth)
            for (_, s0, e0), (_, s1, e1) in zip(truth, got):
                errors += [abs(s1 - s0), abs(e1 - e0)]
        err = np.array(errors)
        rows.append(
            {
                "voice": spec.describe(),
                "words": len(err) // 2,
                "audio_s": round(seconds, 1),
                "mean_abs_ms": round(1000 * float(err.mean()), 1),
                "median_abs_ms": round(1000 * float(np.median(err)), 1),
                "p90_abs_ms": round(1000 * float(np.quantile(err, 0.9)), 1),
                "within_100ms": round(float(np.mean(err <= 0.1)), 3),
            }
        )
        print(rows[-1])
    all_rows = {"rows": rows, "seconds": time.perf_counter() - t0, "sentences_per_voice": len(texts)}
    out = REPO_ROOT / "runs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "align.json").write_text(json.dumps(all_rows, indent=2))
    lines = [
        "# Word timestamps: Whisper alignment vs word-by-word ground truth (boundary error)",
        "",
        "| voice | words | audio s | mean ms | median ms | p90 ms | within 100 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['voice']} | {r['words']} | {r['audio_s']} | {r['mean_abs_ms']} | {r['median_abs_ms']} |"
        f" {r['p90_abs_ms']} | {100 * r['within_100ms']:.0f}% |"
        for r in rows
    ]
    Path(out / "align.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
