"""Watermark robustness and cost: detection after common transformations, false positives, quality.

    .venv/bin/python benchmarks/bench_watermark.py [--clips 12] [--backend perth]
    .venv/bin/python benchmarks/bench_watermark.py --fpr-only [--manifest M.jsonl ...] [--audio-dir DIR ...]

Writes runs/bench/watermark.json and runs/bench/watermark.md (the corpus part also to
watermark_fpr_BACKEND.json / .md), each with the machine and how busy its CPU was just before
(``machine.py``; only the streaming cost depends on it). Speech comes from the bundle's voices
(Kokoro jm_kumo / jf_gongitsune, Piper) and espeak-ng, so the numbers are reproducible offline.

False positives on real conversations: each dialogue's user channel (channel 1: human-like speech with
noise, never watermarked) and assistant channel (channel 0: clean TTS, marked only when the corpus was
generated with ``watermark_assistant=true``) is cut into ``--window-s`` windows, each run through the
detector.
Manifests default to data/generated/synthetic/{test,train}.jsonl when present, else the test fixture corpus;
``--audio-dir`` adds the stereo files of a corpus still being generated (no manifest yet).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from e2e_voice.audio.io import AudioError, load_audio, resample
from e2e_voice.audio.opus import opus_roundtrip
from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.safety.watermark import StreamingWatermarker, Watermarker, load_watermarker
from eval.machine import context_line, machine_context

SENTENCES = [
    "The weather is nice today, so we should go for a walk in the park.",
    "Please remember to turn off the lights when you leave the room.",
    "I would like to book a table for two people at seven in the evening.",
    "She bought three apples and a loaf of bread at the market this morning.",
    "Could you tell me how to get to the train station from here?",
    "Learning a new language takes patience, practice and a lot of listening.",
]


def opus_bitrate(x: np.ndarray, kbps: int) -> np.ndarray:
    """Encode and decode with libopus at a fixed bitrate (PyAV), back to 24 kHz."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=48_000)
        stream.bit_rate = kbps * 1000
        stream.layout = "mono"
        pcm = resample(x, SAMPLE_RATE, 48_000)
        frame = av.AudioFrame.from_ndarray(
            (np.clip(pcm, -1, 1) * 32767).astype(np.int16)[None], format="s16", layout="mono"
        )
        frame.sample_rate = 48_000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buf.seek(0)
    chunks = []
    with av.open(buf, "r") as inp:
        for fr in inp.decode(audio=0):
            chunks.append(
                fr.to_ndarray().reshape(-1).astype(np.float32) / (32768.0 if fr.format.name == "s16" else 1.0)
            )
    y = resample(np.concatenate(chunks), 48_000, SAMPLE_RATE)
    return y[: len(x)]


def add_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 1, len(x)).astype(np.float32)
    scale = np.sqrt(np.mean(x**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return (x + scale * noise).astype(np.float32)


ATTACKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda x: x,
    "opus (sphn, stream default)": opus_roundtrip,
    "opus 24 kbps": lambda x: opus_bitrate(x, 24),
    "opus 12 kbps": lambda x: opus_bitrate(x, 12),
    "resample 16 kHz and back": lambda x: resample(resample(x, SAMPLE_RATE, 16_000), 16_000, SAMPLE_RATE),
    "noise 20 dB SNR": lambda x: add_noise(x, 20.0),
    "volume x0.5": lambda x: 0.5 * x,
    "volume x1.8 (clipped)": lambda x: np.clip(1.8 * x, -1, 1),
    "crop 0.5 s": lambda x: x[: SAMPLE_RATE // 2],
}


def speech_clips(n: int) -> list[tuple[str, np.ndarray]]:
    from e2e_voice.tts import espeak
    from e2e_voice.tts.kokoro import KokoroTTS
    from e2e_voice.tts.piper import PiperTTS

    kokoro, piper = KokoroTTS(), PiperTTS()
    makers: list[tuple[str, Callable[[str], np.ndarray]]] = [
        ("kokoro:jm_kumo", lambda s: kokoro.synthesize(s, voice="jm_kumo")),
        ("kokoro:jf_gongitsune", lambda s: kokoro.synthesize(s, voice="jf_gongitsune")),
        ("piper:joe", lambda s: resample(piper.synthesize(s), piper.sample_rate, SAMPLE_RATE)),
        ("espeak:en-us", lambda s: resample(espeak.synthesize(s)[0], 22_050, SAMPLE_RATE)),
    ]
    clips = []
    for i in tqdm(range(n), desc="synthesizing", leave=False):
        name, make = makers[i % len(makers)]
        text = SENTENCES[i % len(SENTENCES)]
        clips.append((f"{name}|{text}", make(text)))
    return clips


CHANNELS = {"assistant": 0, "user": 1}  # the corpus layout: [C=2, T], assistant first
SYNTH_MANIFESTS = ("data/generated/synthetic/test.jsonl", "data/generated/synthetic/train.jsonl")
FIXTURE_MANIFEST = "tests/fixtures/dialogues/manifest.jsonl"
ACTIVE_RMS = 0.003  # about -50 dBFS: a window quieter than this holds no speech worth calling


def dialogue_files(manifests: list[str], audio_dirs: list[str], settle_s: float = 60.0) -> list[Path]:
    """Stereo dialogue files from manifests and from corpus folders (files written in the last
    ``settle_s`` seconds are skipped: the generator may still be writing them)."""
    from e2e_voice.data.manifest import read_manifest

    files = [e.audio for m in manifests for e in read_manifest(m, skip_bad=True, check_audio=False).entries]
    now = time.time()
    for d in audio_dirs:
        files += [f for f in sorted(Path(d).glob("*.flac")) if now - f.stat().st_mtime > settle_s]
    return list(dict.fromkeys(files))  # a file listed twice counts once


def corpus_detections(
    wm: Watermarker, files: list[Path], window_s: float
) -> dict[str, dict[str, float | int]]:
    """Per channel: windows cut, windows detected as watermarked, and the same over windows with speech."""
    n = int(window_s * SAMPLE_RATE)
    counts = {ch: {"windows": 0, "detected": 0, "active_windows": 0, "active_detected": 0} for ch in CHANNELS}
    confidences: dict[str, list[float]] = {ch: [] for ch in CHANNELS}
    unreadable = 0
    for path in tqdm(files, desc="dialogues", leave=False):
        try:
            audio = load_audio(path, SAMPLE_RATE, mono=False)  # [C, T]
        except AudioError:
            unreadable += 1
            continue
        for ch, c in CHANNELS.items():
            for start in range(0, audio.shape[1] - n + 1, n):
                x = audio[c, start : start + n]
                det = wm.detect(x, SAMPLE_RATE)
                active = float(np.sqrt(np.mean(x**2))) > ACTIVE_RMS
                counts[ch]["windows"] += 1
                counts[ch]["detected"] += int(det.present)
                counts[ch]["active_windows"] += int(active)
                counts[ch]["active_detected"] += int(det.present and active)
                confidences[ch].append(det.confidence)
    out: dict[str, dict[str, float | int]] = {}
    for ch, k in counts.items():
        out[ch] = {
            **k,
            "rate": k["detected"] / max(k["windows"], 1),
            "active_rate": k["active_detected"] / max(k["active_windows"], 1),
            "max_confidence": float(max(confidences[ch], default=0.0)),
            "mean_confidence": float(np.mean(confidences[ch])) if confidences[ch] else 0.0,
        }
    out["files"] = {"dialogues": len(files) - unreadable, "unreadable": unreadable, "window_s": window_s}
    return out


def corpus_lines(
    result: dict[str, dict[str, float | int]], backend: str, marked_assistant: bool
) -> list[str]:
    f = result["files"]
    what = "detection (marked)" if marked_assistant else "false positives (clean TTS)"
    lines = [
        f"## {backend}: windows flagged as watermarked ({f['dialogues']} dialogues, {f['window_s']:g} s)",
        "",
        "| channel | windows | flagged | rate | speech windows | flagged | rate | max conf. |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for ch, label in (("user", "user (ch 1): false positives"), ("assistant", f"assistant (ch 0): {what}")):
        r = result[ch]
        lines.append(
            f"| {label} | {r['windows']} | {r['detected']} | {r['rate']:.3f} | {r['active_windows']} |"
            f" {r['active_detected']} | {r['active_rate']:.3f} | {r['max_confidence']:.3f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--backend", choices=["perth", "audioseal"], default="perth")
    parser.add_argument("--model-path", default=None, help="local checkpoint for the backend")
    parser.add_argument("--manifest", action="append", default=None, help="dialogue manifest (repeatable)")
    parser.add_argument(
        "--audio-dir", action="append", default=[], help="folder of stereo dialogue .flac files"
    )
    parser.add_argument("--window-s", type=float, default=4.0)
    parser.add_argument(
        "--assistant-marked",
        action="store_true",
        help="the corpus was generated with watermark_assistant=true",
    )
    parser.add_argument("--fpr-only", action="store_true", help="only the corpus false-positive measurement")
    args = parser.parse_args()
    wm = load_watermarker(args.backend, args.model_path)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    manifests = args.manifest
    if manifests is None:
        manifests = [m for m in SYNTH_MANIFESTS if Path(m).is_file()] or (
            [] if args.audio_dir else [FIXTURE_MANIFEST]
        )
    files = dialogue_files(manifests, args.audio_dir)
    machine = machine_context()
    corpus = corpus_detections(wm, files, args.window_s)
    corpus_md = corpus_lines(corpus, args.backend, args.assistant_marked)
    sources = [*manifests, *args.audio_dir]
    corpus_md += ["", f"Sources: {', '.join(sources)}."]
    (out / f"watermark_fpr_{args.backend}.json").write_text(
        json.dumps({"machine": machine, "sources": sources, **corpus}, indent=2)
    )
    (out / f"watermark_fpr_{args.backend}.md").write_text(
        "\n".join([context_line(machine), "", *corpus_md]) + "\n"
    )
    print("\n".join(corpus_md))
    if args.fpr_only:
        return

    from e2e_voice.stt.whisper import WhisperSTT, word_error_rate
    from eval.codec import pesq_wb, si_sdr

    clips = speech_clips(args.clips)
    marked = [wm.embed(x, SAMPLE_RATE) for _, x in tqdm(clips, desc="embedding", leave=False)]

    rows = []
    for name, attack in tqdm(ATTACKS.items(), desc="attacks"):
        tp = [wm.detect(attack(m), SAMPLE_RATE).present for m in marked]
        fp = [wm.detect(attack(x), SAMPLE_RATE).present for _, x in clips]
        rows.append(
            {"attack": name, "detection_rate": float(np.mean(tp)), "false_positive_rate": float(np.mean(fp))}
        )

    stt = WhisperSTT()
    texts = [key.split("|", 1)[1] for key, _ in clips]
    hyp_clean = [stt.transcribe(x, SAMPLE_RATE) for _, x in clips]
    hyp_marked = [stt.transcribe(m, SAMPLE_RATE) for m in marked]
    quality = {
        "snr_db_mean": float(
            np.mean([10 * np.log10(np.sum(x**2) / np.sum((x - m) ** 2)) for (_, x), m in zip(clips, marked)])
        ),
        "si_sdr_db_mean": float(np.mean([si_sdr(x, m) for (_, x), m in zip(clips, marked)])),
        "wer_original": word_error_rate(texts, hyp_clean),
        "wer_watermarked": word_error_rate(texts, hyp_marked),
    }
    pesqs = [v for (_, x), m in zip(clips, marked) if (v := pesq_wb(x, m)) is not None]
    quality["pesq_wb_mean"] = float(np.mean(pesqs)) if pesqs else None

    # Streaming cost: what the server pays per 80 ms frame.
    stream = StreamingWatermarker(wm)
    x = np.concatenate([c for _, c in clips])[: 50 * FRAME_SIZE]
    t0 = time.perf_counter()
    for i in range(0, len(x), FRAME_SIZE):
        stream.step(x[i : i + FRAME_SIZE])
    per_frame_ms = 1000 * (time.perf_counter() - t0) / (len(x) // FRAME_SIZE)
    t0 = time.perf_counter()
    for _, c in clips:
        wm.embed(c, SAMPLE_RATE)
    offline_rtf = (time.perf_counter() - t0) / sum(len(c) / SAMPLE_RATE for _, c in clips)

    result = {
        "backend": args.backend,
        "clips": len(clips),
        "attacks": rows,
        "quality": quality,
        "streaming_ms_per_80ms_frame": per_frame_ms,
        "offline_real_time_factor": offline_rtf,
        "corpus": corpus,
        "machine": machine,
    }
    (out / "watermark.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Watermark robustness ({args.backend}, {len(clips)} clips: Kokoro x2 voices, Piper, espeak-ng)",
        "",
        context_line(machine),
        "",
        "| transformation | detection rate (marked) | false positives (clean) |",
        "| --- | --- | --- |",
        *[f"| {r['attack']} | {r['detection_rate']:.2f} | {r['false_positive_rate']:.2f} |" for r in rows],
        "",
        "| quality | value |",
        "| --- | --- |",
        *[f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in quality.items()],
        "",
        f"Streaming: {per_frame_ms:.1f} ms per 80 ms frame (one frame of delay); offline embed RTF"
        f" {offline_rtf:.3f}.",
        "",
        *corpus_md,
    ]
    (out / "watermark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
