"""Codec metrics: the metric functions on known cases, and the evaluation report end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from e2e_voice.audio.io import save_audio
from e2e_voice.codec import build_codec, randomize_codebooks
from e2e_voice.constants import SAMPLE_RATE
from eval.codec import Clip, evaluate, evaluate_clips, main, pesq_wb, si_sdr, stoi, turn_clips
from tests.helpers import espeak_speech, logging_codec

TEXT = "Metrics should tell a clean copy from noise."


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return espeak_speech(TEXT, SAMPLE_RATE)


def test_metrics_separate_clean_from_noisy(speech: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    noisy = speech + 0.5 * speech.std() * rng.standard_normal(speech.size).astype(np.float32)
    assert si_sdr(speech, 0.5 * speech) > 60  # scale-invariant: a quieter copy is perfect
    assert 0 < si_sdr(speech, noisy) < 10
    assert stoi(speech, speech) > 0.99 > stoi(speech, noisy)
    clean_pesq, noisy_pesq = pesq_wb(speech, speech), pesq_wb(speech, noisy)
    assert clean_pesq is not None and noisy_pesq is not None and clean_pesq > 4.0 > noisy_pesq
    assert pesq_wb(np.zeros(SAMPLE_RATE, np.float32), np.zeros(SAMPLE_RATE, np.float32)) is None


class _EchoJudge:
    """Stands in for Whisper in this unit test: 'hears' the reference only in the original clip."""

    def __init__(self, original: np.ndarray) -> None:
        self.original = original

    def transcribe(self, audio: np.ndarray, sr: int) -> str:
        return TEXT if np.array_equal(audio, self.original) else "static"


def test_evaluate_writes_table_json_and_plots(speech: np.ndarray, tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    save_audio(wav, speech, SAMPLE_RATE, subtype="FLOAT")
    wav.with_suffix(".txt").write_text(TEXT + "\n")
    codec = build_codec(
        num_codebooks=2, n_filters=16, transformer_layers=1, quantizer_levels=4, codebook_size=256
    )
    randomize_codebooks(codec.model)
    summary = evaluate(codec, [wav], tmp_path / "out", judge=_EchoJudge(speech), plots=1)
    mean = summary["mean"]
    assert summary["codec"]["bitrate_bps"] == pytest.approx(2 * 8 * 12.5)
    assert mean["wer_original"] == 0.0 and mean["wer_reconstruction"] == 1.0
    assert mean["si_sdr"] < 0  # random weights reconstruct nothing
    assert mean["rtf_encode"] > 0 and mean["rtf_decode"] > 0
    assert json.loads((tmp_path / "out" / "codec_metrics.json").read_text())["clips"] == 1
    assert "| clip.wav |" in (tmp_path / "out" / "codec_metrics.md").read_text()
    assert (tmp_path / "out" / "spectrogram_00.png").stat().st_size > 1000


def test_judge_factory_is_built_after_the_codec_is_timed(speech: np.ndarray, tmp_path: Path) -> None:
    """A live CTranslate2 judge slows torch, so a factory must not run until every clip was coded."""
    events: list[str] = []
    codec = logging_codec(events)

    def factory() -> _EchoJudge:
        events.append("judge")
        return _EchoJudge(speech)

    class LateJudge(_EchoJudge):  # a class is a factory too (``python -m eval.codec`` passes WhisperSTT)
        def __init__(self) -> None:
            events.append("judge")
            super().__init__(speech)

    clips = [Clip(f"c{i}", speech, TEXT) for i in range(3)]
    for judge in (factory, LateJudge):
        events.clear()
        summary = evaluate_clips(codec, clips, tmp_path / "out", judge=judge, plots=0)
        assert events == ["encode", "encode", "encode", "judge"]
        assert summary["mean"]["wer_original"] == 0.0  # the late judge did the scoring


@pytest.mark.slow
def test_cli_with_whisper_judge(speech: np.ndarray, tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    save_audio(wav, speech, SAMPLE_RATE)
    wav.with_suffix(".txt").write_text(TEXT + "\n")
    assert main(["--codec", "tiny", "--audio", str(wav), "--out", str(tmp_path / "o"), "--plots", "0"]) == 0
    summary = json.loads((tmp_path / "o" / "codec_metrics.json").read_text())
    mean = summary["mean"]
    assert summary["machine"]["threads"] == 2 and "cpu_busy_before" in summary["machine"]
    assert "Real-time factors: Measured " in (tmp_path / "o" / "codec_metrics.md").read_text()
    assert mean["wer_original"] < 0.5  # the judge understands espeak
    assert mean["wer_reconstruction"] > mean["wer_original"]  # and not a random-weight codec


def test_turn_clips_cut_each_turn_from_its_speaker_channel(tmp_path: Path) -> None:
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    assistant = (0.2 * np.sin(2 * np.pi * 300 * t) * (t >= 2.0)).astype(np.float32)
    user = (0.2 * np.sin(2 * np.pi * 150 * t) * (t < 1.0)).astype(np.float32)
    (tmp_path / "audio").mkdir()
    save_audio(tmp_path / "audio" / "c.flac", np.stack([assistant, user]), SAMPLE_RATE)
    turns = [
        {"speaker": "user", "start": 0.1, "end": 0.9, "text": "hello there"},
        {"speaker": "assistant", "start": 2.1, "end": 2.95, "text": "hi"},
    ]
    manifest = tmp_path / "test.jsonl"
    manifest.write_text(json.dumps({"id": "c", "audio": "audio/c.flac", "turns": turns}) + "\n")
    clips = turn_clips(manifest, pad_s=0.1)
    assert [c.name for c in clips] == ["c_00_user", "c_01_assistant"]
    assert [c.reference for c in clips] == ["hello there", "hi"]
    assert abs(clips[0].audio.size - SAMPLE_RATE) <= 2  # 0.1 s .. 0.9 s plus 0.1 s on each side
    assert np.abs(clips[0].audio).max() > 0.1  # the user's tone, not the silent assistant channel
    assert clips[1].audio.size == 3 * SAMPLE_RATE - int(2.0 * SAMPLE_RATE)  # clipped at the file's end
    assert np.abs(clips[1].audio).max() > 0.1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "c", "audio": "audio/c.flac"}) + "\n")
    with pytest.raises(ValueError, match="no 'turns'"):
        turn_clips(bad)
    with pytest.raises(FileNotFoundError, match="synth-data"):
        turn_clips(tmp_path / "missing.jsonl")
