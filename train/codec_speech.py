"""A many-voice speech set for codec training: the corpus's own sentences, spoken by ~100 voice settings.

The dialogue corpus (``e2e-voice synth-data``) has one assistant voice and one user voice per
conversation, and the user says a sentence or two, so a codec trained on it hears a few minutes of each
of a few dozen voices. This writes ``num_clips`` clips of ``clip_seconds`` each, every clip one voice
setting (engine, voice, rate, pitch, noise drawn from :data:`POOLS`) reading consecutive sentences of the
corpus's **train** split with short pauses between them, at a random level. The default corpus is the
codec recipes' own (``data/generated/synthetic_shared``, one prompt bank for all splits; see
``configs/experiment/codec_cpu.yaml``).

Held out on purpose, so that the ``held_out`` group of the codec evaluation set (``python -m
eval.codec_set``) keeps measuring unseen voices: :data:`e2e_voice.data.synth.HELD_OUT_VOICES`. Only the
train split's turns are read, but the corpus's splits share some text (one prompt bank, deterministic
answers: 19 of the 390 train sentences also occur in valid/test turns), so the in-domain test turns are
unseen conversations, not wholly unseen sentences; the evaluation set's sentences are unseen.

    python -m train.codec_speech                      # data/generated/codec_voices, 120 clips x 20 s
    python -m train.codec_speech OUT --num-clips 40 --clip-seconds 10

Clips already on disk are kept (a rerun finishes an interrupted one); ``manifest.jsonl`` lists every
clip with its voice and text and is rewritten at the end. Everything random comes from
``np.random.default_rng([seed, index])``, so clip ``i`` does not depend on the others.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from e2e_voice.audio.io import save_audio
from e2e_voice.audio.level import set_speech_level
from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.data.manifest import read_manifest
from e2e_voice.data.synth import VoicePool, draw_voice
from e2e_voice.tts import engines

_ESPEAK_DIALECTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan", "en-us-nyc")
_ESPEAK_VARIANTS = (
    "m1", "m2", "m4", "m5", "m6", "m7", "f1", "f2", "f4", "f5", "klatt", "klatt2", "klatt3", "Alicia",
    "Andy", "Annie", "Mario", "linda", "steph", "david", "edward", "aunty", "Michael", "Paul", "Lee",
    "Belinda", "Zac", "john", "victor", "grandma", "travis", "shelby",
)  # fmt: skip

POOLS: tuple[VoicePool, ...] = (
    VoicePool(
        "espeak",
        tuple(f"{d}+{v}" for d in _ESPEAK_DIALECTS for v in _ESPEAK_VARIANTS),
        weight=3,
        rate=(0.8, 1.25),
        pitch=(20, 80),
    ),
    VoicePool("flite", ("slt", "rms", "awb", "kal16", "kal"), weight=2, rate=(0.8, 1.2), pitch=(80, 220)),
    VoicePool("festival", ("kal_diphone",), weight=1, rate=(0.8, 1.2)),
    VoicePool("piper", ("piper-en-us-joe",), weight=2, rate=(0.8, 1.25), noise=(0.3, 1.0)),
    VoicePool("kokoro", ("jm_kumo", "jf_gongitsune"), weight=2, rate=(0.85, 1.2)),
)
"""Where each clip's voice is drawn from (pool by weight, then voice and jitter). A held-out voice here
would quietly make the out-of-domain set in-domain; ``tests/test_codec_speech.py`` checks there is none."""

_LIST_MARK = re.compile(r"^\s*(\d+[.)]|[-*•])\s*")


def corpus_sentences(manifest: str | Path, min_words: int = 3, max_words: int = 30) -> list[str]:
    """Distinct sentences of every turn of a dialogue manifest, in order (list markers removed).

    Raises:
        ValueError: the manifest has no sentence of ``min_words``..``max_words`` words.
    """
    entries = read_manifest(manifest, check_audio=False).entries
    seen: dict[str, None] = {}
    for entry in entries:
        for turn in entry.turns:
            for piece in re.split(r"(?<=[.!?])\s+", turn.text):
                s = _LIST_MARK.sub("", piece).strip()
                n = len(s.split())
                if min_words <= n <= max_words and not re.search(r"\d+[.)]$", s):
                    seen.setdefault(s, None)
    if not seen:
        raise ValueError(
            f"{manifest}: no sentence of {min_words}-{max_words} words in its turns; is it a dialogue "
            "manifest written by `e2e-voice synth-data`?"
        )
    return list(seen)


def render_clip(
    index: int, sentences: Sequence[str], seed: int = 0, clip_seconds: float = 20.0
) -> tuple[np.ndarray, dict[str, object]]:
    """Clip ``index``: one drawn voice reading sentences from a drawn start until ``clip_seconds``.

    Returns:
        ``(audio [T] float32 at 24 kHz, record)`` with the voice, the text and the duration.
    """
    rng = np.random.default_rng([seed, index])
    spec = draw_voice(POOLS, rng)
    pieces: list[np.ndarray] = [np.zeros(int(rng.uniform(0.05, 0.3) * SAMPLE_RATE), np.float32)]
    said: list[str] = []
    k = int(rng.integers(len(sentences)))
    length = pieces[0].size
    while length < clip_seconds * SAMPLE_RATE and len(said) < len(sentences):
        text = sentences[(k + len(said)) % len(sentences)]
        speech = engines.synthesize(spec, text)
        gap = np.zeros(int(rng.uniform(0.15, 0.6) * SAMPLE_RATE), np.float32)
        pieces += [speech, gap]
        said.append(text)
        length += speech.size + gap.size
    audio = np.concatenate(pieces)[: int(clip_seconds * SAMPLE_RATE)]
    if not np.abs(audio).max() > 0.0:
        raise RuntimeError(f"{spec.describe()} produced silence for {said[0]!r}")
    audio = set_speech_level(audio, float(rng.uniform(-26, -16)))  # speech-active RMS, peak <= 0.99
    seconds = round(audio.size / SAMPLE_RATE, 3)
    record = {"voice": spec.describe(), "text": " ".join(said), "duration": seconds}
    return audio, record


def build(
    out_dir: str | Path,
    manifest: str | Path = "data/generated/synthetic_shared/train.jsonl",
    num_clips: int = 120,
    clip_seconds: float = 20.0,
    seed: int = 0,
    threads: int = 2,
) -> Path:
    """Write the speech set to ``out_dir`` (``clip_NNNN.wav`` + ``manifest.jsonl``); returns the manifest."""
    if num_clips < 1 or clip_seconds <= 0:
        raise ValueError(f"need num_clips >= 1 and clip_seconds > 0, got {num_clips} and {clip_seconds}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sentences = corpus_sentences(manifest)
    engines.set_threads(threads)
    rows = []
    start = time.perf_counter()
    for i in tqdm(range(num_clips), desc="codec speech clips"):
        wav = out / f"clip_{i:04d}.wav"
        meta = wav.with_suffix(".json")
        if wav.exists() and meta.exists():  # a finished clip from an interrupted run
            rows.append(json.loads(meta.read_text()))
            continue
        audio, record = render_clip(i, sentences, seed, clip_seconds)
        record["audio"] = wav.name
        tmp = wav.with_name(wav.stem + ".tmp.wav")  # whole files only: a kill leaves no half clip
        save_audio(tmp, audio, SAMPLE_RATE)
        tmp.replace(wav)
        meta.write_text(json.dumps(record) + "\n")
        rows.append(record)
    path = out / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    minutes = sum(float(r["duration"]) for r in rows) / 60
    voices = len({r["voice"] for r in rows})
    print(
        f"{len(rows)} clips, {minutes:.1f} min, {voices} voice settings, {len(sentences)} distinct sentences"
        f" -> {path} ({time.perf_counter() - start:.0f} s)"
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="data/generated/codec_voices")
    parser.add_argument(
        "--manifest", default="data/generated/synthetic_shared/train.jsonl", help="sentence source"
    )
    parser.add_argument("--num-clips", type=int, default=120)
    parser.add_argument("--clip-seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the Kokoro and Piper models")
    args = parser.parse_args(argv)
    build(args.out_dir, args.manifest, args.num_clips, args.clip_seconds, args.seed, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
