"""The codec evaluation set: held-out sentences read by three groups of voices.

The corpus's test turns (20 turns, 80 s) are too few to rank codec recipes: one hallucinated turn moves a
role's WER by tens of points. This set is larger, and every sentence in it is unseen by the corpus
(:func:`corpus_overlap` refuses one that is not). Each group reads the same sentence pairs, so the groups
differ by voice alone:

- ``assistant``: the corpus's assistant voice (``assistant`` in ``configs/synth_data.yaml``);
- ``user``: a voice drawn per clip from the corpus's user pools (``users``), as its conversations draw them;
- ``held_out``: :data:`e2e_voice.data.synth.HELD_OUT_VOICES`, voices no training set draws.

Clip ``i`` of every group reads lines ``2i`` and ``2i + 1`` of :data:`SENTENCES`, with short pauses,
at a level between -26 and -16 dBFS. ``clip_NNN_GROUP.wav`` comes with its transcript ``.txt``, and
``manifest.jsonl`` lists group, voice and text (``eval.codec --set`` reads it).

    python -m eval.codec_set                          # data/generated/codec_eval: 3 groups x 40 clips
    python -m eval.codec --set data/generated/codec_eval --checkpoint checkpoints/codec_cpu/codec.safetensors
    python -m eval.codec_rank --set data/generated/codec_eval \\
        --checkpoint 'runs/train_codec/*/codec.safetensors'

Clips on disk are kept (a rerun finishes an interrupted build); every random draw comes from
``np.random.default_rng([seed, group, index])``, so a clip does not depend on the others, and every
engine reads the same way in every build (Piper, which samples its prosody, is seeded by voice and
text), so a rebuild gives the same set. Piper clips written before that (no ``"reading"`` naming
:data:`engines.SEEDED_READINGS` in their record) are read again by the next build.
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from e2e_voice.audio.io import save_audio
from e2e_voice.audio.level import set_speech_level
from e2e_voice.constants import REPO_ROOT, SAMPLE_RATE
from e2e_voice.data.synth import HELD_OUT_VOICES, VoicePool, draw_voice
from e2e_voice.stt.whisper import normalize_text
from e2e_voice.tts import engines
from e2e_voice.tts.engines import VoiceSpec

SENTENCES = REPO_ROOT / "eval" / "data" / "codec_eval_sentences.txt"
GROUPS = ("assistant", "user", "held_out")
HELD_OUT_RATE = (0.9, 1.1)  # rate jitter of the held-out voices (the corpus's users get their pools' ranges)


def load_sentences(path: str | Path = SENTENCES) -> list[str]:
    """The sentence bank: one per line, ``#`` lines are comments.

    Raises:
        ValueError: the file has no sentence, or a sentence twice.
    """
    lines = [s.strip() for s in Path(path).read_text().splitlines()]
    sentences = [s for s in lines if s and not s.startswith("#")]
    if not sentences:
        raise ValueError(f"{path} has no sentences (one per line, # for comments)")
    dup = sorted({s for s in sentences if sentences.count(s) > 1})
    if dup:
        raise ValueError(f"{path}: sentences occur twice: {dup[:3]}")
    return sentences


def corpus_overlap(sentences: Sequence[str], manifests: Sequence[str | Path]) -> list[str]:
    """The sentences that occur (after WER normalisation) inside a turn of any of the manifests."""
    texts = []
    for manifest in manifests:
        for line in Path(manifest).read_text().splitlines():
            if line.strip():
                texts += [normalize_text(t["text"]) for t in json.loads(line).get("turns", [])]
    blob = "\n".join(texts)
    return [s for s in sentences if normalize_text(s) in blob]


def clip_voice(
    group: str, index: int, assistant: VoiceSpec, users: Sequence[VoicePool], seed: int = 0
) -> VoiceSpec:
    """The voice of clip ``index`` of ``group`` (see the module docstring).

    Raises:
        ValueError: an unknown group.
    """
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; choose from {GROUPS}")
    rng = np.random.default_rng([seed, GROUPS.index(group), index])
    if group == "assistant":
        return assistant
    if group == "user":
        return draw_voice(tuple(users), rng)
    held = sorted(HELD_OUT_VOICES)
    engine, voice = held[index % len(held)]  # each held-out voice equally often
    return VoicePool(engine, (voice,), rate=HELD_OUT_RATE).draw(rng)


def reusable(record: dict) -> bool:
    """Whether a finished clip can be kept: any but a Piper clip read before Piper readings were seeded.

    Piper samples its prosody; its clips from before 2026-12-01 were random readings that no rebuild
    repeats, so every build of the set differed in them (13 of the 40 user clips).
    """
    if record.get("reading") == engines.SEEDED_READINGS:
        return True
    return not str(record.get("voice", "")).startswith("piper:")


def render(spec: VoiceSpec, texts: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """``texts`` read by ``spec`` with 0.3-0.6 s pauses, 0.2 s of silence around, at -26..-16 dBFS.

    Raises:
        RuntimeError: the engine produced silence.
    """
    edge = np.zeros(int(0.2 * SAMPLE_RATE), np.float32)
    pieces = [edge]
    for k, text in enumerate(texts):
        if k:
            pieces.append(np.zeros(int(rng.uniform(0.3, 0.6) * SAMPLE_RATE), np.float32))
        pieces.append(engines.synthesize(spec, text))
    pieces.append(edge)
    audio = np.concatenate(pieces)
    if not np.abs(audio).max() > 0.0:
        raise RuntimeError(f"{spec.describe()} produced silence for {texts[0]!r}")
    return set_speech_level(audio, float(rng.uniform(-26, -16)))


def build(
    out_dir: str | Path,
    assistant: VoiceSpec,
    users: Sequence[VoicePool],
    clips_per_group: int = 40,
    groups: Sequence[str] = GROUPS,
    sentences: Sequence[str] | None = None,
    exclude: Sequence[str | Path] = (),
    seed: int = 0,
    threads: int = 2,
) -> Path:
    """Write the set to ``out_dir``; returns its ``manifest.jsonl``.

    Args:
        out_dir: output folder (created).
        assistant: the corpus's assistant voice.
        users: the corpus's user pools.
        clips_per_group: clips per group; clip ``i`` reads sentences ``2i`` and ``2i + 1``.
        groups: which of :data:`GROUPS` to write.
        sentences: the bank (default :data:`SENTENCES`).
        exclude: corpus manifests whose turns no sentence may occur in.
        seed: the voice, pause and level draws.
        threads: CPU threads of the Kokoro and Piper models.

    Raises:
        ValueError: too few sentences for ``clips_per_group``, an unknown group, or a sentence that occurs
            in an ``exclude`` manifest (the set would not be held out).
    """
    bank = list(sentences) if sentences is not None else load_sentences()
    if clips_per_group < 1 or 2 * clips_per_group > len(bank):
        raise ValueError(
            f"clips_per_group={clips_per_group}: each clip reads 2 sentences and the bank has {len(bank)},"
            f" so use 1..{len(bank) // 2} (or add sentences to {SENTENCES})"
        )
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        raise ValueError(f"unknown groups {bad}; choose from {GROUPS}")
    seen = corpus_overlap(bank[: 2 * clips_per_group], exclude)
    if seen:
        raise ValueError(
            f"{len(seen)} evaluation sentences occur in the corpus ({[str(e) for e in exclude]}), e.g."
            f" {seen[0]!r}; replace them in {SENTENCES} so the set stays held out"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    engines.set_threads(threads)
    rows = []
    start = time.perf_counter()
    jobs = [(g, i) for g in groups for i in range(clips_per_group)]
    for group, i in tqdm(jobs, desc="codec eval clips"):
        wav = out / f"clip_{i:03d}_{group}.wav"
        meta = wav.with_suffix(".json")
        if wav.exists() and meta.exists():  # a finished clip from an interrupted build
            done = json.loads(meta.read_text())
            if reusable(done):
                rows.append(done)
                continue
            print(f"{wav.name}: an unseeded Piper reading from before 2026-12-01; reading it again")
        spec = clip_voice(group, i, assistant, users, seed)
        texts = bank[2 * i : 2 * i + 2]
        audio = render(spec, texts, np.random.default_rng([seed, GROUPS.index(group), i, 1]))
        tmp = wav.with_name(wav.stem + ".tmp.wav")  # whole files only: a kill leaves no half clip
        save_audio(tmp, audio, SAMPLE_RATE)
        tmp.replace(wav)
        text = " ".join(texts)
        wav.with_suffix(".txt").write_text(text + "\n")
        record = {
            "audio": wav.name,
            "group": group,
            "voice": spec.describe(),
            "text": text,
            "duration": round(audio.size / SAMPLE_RATE, 3),
            "reading": engines.SEEDED_READINGS,
        }
        meta.write_text(json.dumps(record) + "\n")
        rows.append(record)
    path = out / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for group in groups:
        mine = [r for r in rows if r["group"] == group]
        minutes = sum(float(r["duration"]) for r in mine) / 60
        print(
            f"{group}: {len(mine)} clips, {minutes:.1f} min, {len({r['voice'] for r in mine})} voice settings"
        )
    print(f"-> {path} ({time.perf_counter() - start:.0f} s)")
    return path


def corpus_voices(overrides: Sequence[str] = ()) -> tuple[VoiceSpec, tuple[VoicePool, ...]]:
    """The assistant voice and user pools of the ``synth_data`` config (with Hydra ``overrides``)."""
    from hydra import compose, initialize_config_dir

    from e2e_voice.constants import CONFIG_DIR
    from e2e_voice.data.synth_cli import settings_from_config

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("synth_data", overrides=list(overrides))
    settings = settings_from_config(cfg)
    return settings.assistant, settings.users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.codec_set", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default="data/generated/codec_eval")
    parser.add_argument("--clips-per-group", type=int, default=40)
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS)
    parser.add_argument(
        "--exclude",
        nargs="*",
        default=["data/generated/synthetic/*.jsonl", "data/generated/synthetic_shared/*.jsonl"],
        help="corpus manifests (globs) no sentence may occur in; those that do not exist are skipped",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--synth-override",
        nargs="*",
        default=[],
        help="Hydra overrides of synth_data (e.g. assistant.voice=...)",
    )
    args = parser.parse_args(argv)
    exclude = sorted(p for pat in args.exclude for p in glob.glob(pat))
    if not exclude:
        print("note: no corpus manifest to check the sentences against (write one with e2e-voice synth-data)")
    assistant, users = corpus_voices(args.synth_override)
    build(
        args.out_dir,
        assistant,
        users,
        args.clips_per_group,
        args.groups,
        exclude=exclude,
        seed=args.seed,
        threads=args.threads,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
