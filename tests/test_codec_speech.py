"""The many-voice codec speech set (train/codec_speech.py): sentences, voices held out, resumable build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from e2e_voice.audio.io import load_audio
from e2e_voice.constants import REPO_ROOT, SAMPLE_RATE
from e2e_voice.data.synth import HELD_OUT_VOICES
from e2e_voice.tts.engines import VoiceSpec
from train import codec_speech
from train.codec_data import find_audio

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "dialogues" / "manifest.jsonl"


def test_corpus_sentences_come_from_the_turns() -> None:
    sentences = codec_speech.corpus_sentences(FIXTURE)
    turns = [json.loads(line)["turns"] for line in FIXTURE.read_text().splitlines() if line.strip()]
    text = " ".join(t["text"] for conv in turns for t in conv)
    assert sentences and len(set(sentences)) == len(sentences)
    for s in sentences:
        assert s in text and 3 <= len(s.split()) <= 30
        assert not s[0].isdigit() or not s.split()[0].rstrip(".)").isdigit()  # list markers stripped


def test_a_manifest_without_sentences_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no sentence"):
        codec_speech.corpus_sentences(FIXTURE, min_words=500, max_words=600)


def test_held_out_voices_are_in_no_pool() -> None:
    drawn = {(p.engine, v) for p in codec_speech.POOLS for v in p.voices}
    assert not drawn & HELD_OUT_VOICES
    assert {("kokoro", "jf_alpha"), ("espeak", "en-us+f3")} <= HELD_OUT_VOICES


def test_render_clip_is_one_voice_at_a_bounded_level(monkeypatch: pytest.MonkeyPatch) -> None:
    """The TTS call is faked (the level logic is what is tested); each sentence is a 0.5 s tone."""
    calls: list[tuple[VoiceSpec, str]] = []

    def fake(spec: VoiceSpec, text: str) -> np.ndarray:
        calls.append((spec, text))
        t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
        return (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)

    monkeypatch.setattr(codec_speech.engines, "synthesize", fake)
    sentences = [f"sentence number {i} here" for i in range(50)]
    audio, record = codec_speech.render_clip(7, sentences, seed=1, clip_seconds=3.0)
    assert audio.shape == (3 * SAMPLE_RATE,) and audio.dtype == np.float32
    assert len({c[0] for c in calls}) == 1, "one voice per clip"
    said = [c[1] for c in calls]
    start = sentences.index(said[0])
    assert said == [sentences[(start + k) % 50] for k in range(len(said))], "consecutive sentences"
    assert record["text"] == " ".join(said) and record["duration"] == 3.0
    active = audio[np.abs(audio) > 1e-3]
    level = 20 * np.log10(np.sqrt(np.mean(active**2)))
    assert -26.5 < level < -15.5 and np.abs(audio).max() <= 0.99
    again, _ = codec_speech.render_clip(7, sentences, seed=1, clip_seconds=3.0)
    assert np.array_equal(audio, again), "clip i depends only on (seed, i)"


@pytest.mark.slow
def test_build_speaks_real_voices_and_resumes(tmp_path: Path) -> None:
    """Three real clips (espeak/flite/festival/Piper/Kokoro, whichever are drawn); a rerun keeps them."""
    manifest = codec_speech.build(tmp_path, FIXTURE, num_clips=3, clip_seconds=2.0, threads=1)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["audio"] for r in rows] == ["clip_0000.wav", "clip_0001.wav", "clip_0002.wav"]
    for r in rows:
        audio = load_audio(tmp_path / r["audio"], SAMPLE_RATE)
        assert audio.shape[-1] == 2 * SAMPLE_RATE and float(np.abs(audio).max()) > 0.01
    assert len(find_audio([str(tmp_path / "*.wav")])) == 3
    stamp = (tmp_path / "clip_0001.wav").stat().st_mtime_ns
    codec_speech.build(tmp_path, FIXTURE, num_clips=4, clip_seconds=2.0, threads=1)
    assert (tmp_path / "clip_0001.wav").stat().st_mtime_ns == stamp, "finished clips are not redone"
    assert len(manifest.read_text().splitlines()) == 4
