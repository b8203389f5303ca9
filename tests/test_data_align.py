"""Word timestamps: matching recognised words to the known text, trimming, word-by-word synthesis."""

from __future__ import annotations

import numpy as np
import pytest

from e2e_voice.data.align import match_timestamps, speech_bounds, split_words, synthesize_concat, trim
from e2e_voice.tts.engines import VoiceSpec


def test_match_uses_recognised_times_and_fills_gaps() -> None:
    ref = ["Hello,", "big", "wide", "world."]
    hyp = [("hello", 0.1, 0.4), ("world", 1.0, 1.4)]  # 'big wide' missed by the recogniser
    out = match_timestamps(ref, hyp, 0.0, 1.5)
    assert [w for w, _, _ in out] == ref
    assert out[0][1:] == (0.1, 0.4) and out[3][1:] == (1.0, 1.4)
    assert 0.4 <= out[1][1] < out[1][2] <= out[2][1] < out[2][2] <= 1.0
    assert out[1][2] - out[1][1] < out[2][2] - out[2][1]  # split by letter count: 'big' < 'wide'


def test_match_with_nothing_recognised_spreads_over_the_clip() -> None:
    out = match_timestamps(["one", "two"], [], 0.5, 1.5)
    assert out[0][1] == 0.5 and out[-1][2] == 1.5


def test_split_words_drops_bare_punctuation() -> None:
    assert split_words("Well - okay, so... yes!") == ["Well", "okay,", "so...", "yes!"]


def test_trim_cuts_silence() -> None:
    sr = 24000
    audio = np.concatenate([np.zeros(sr), 0.5 * np.sin(np.arange(sr) / 5), np.zeros(sr)]).astype(np.float32)
    a, b = speech_bounds(audio, sr)
    assert abs(a - sr) <= 240 and abs(b - 2 * sr) <= 240
    cut, offset = trim(audio, sr, margin_s=0.0)
    assert abs(len(cut) - sr) <= 480 and abs(offset - 1.0) <= 0.01


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(VoiceSpec("espeak", "en-us"), id="espeak"),
        pytest.param(VoiceSpec("flite", "slt"), id="flite"),
    ],
)
def test_concat_timestamps_are_exact(spec: VoiceSpec) -> None:
    audio, words = synthesize_concat(spec, "Good morning, how are you?")
    assert [w for w, _, _ in words] == ["Good", "morning,", "how", "are", "you?"]
    sr = 24000
    for (_, s, e), nxt in zip(words, [*words[1:], None]):
        seg = audio[round(s * sr) : round(e * sr)]
        assert np.sqrt(np.mean(seg**2)) > 0.01  # speech inside each word
        if nxt is not None:  # digital silence between words
            assert np.abs(audio[round(e * sr) + 1 : round(nxt[1] * sr) - 1]).max(initial=0) == 0
    assert words[-1][2] == pytest.approx(len(audio) / sr, abs=1e-6)


@pytest.mark.slow
def test_whisper_alignment_error_is_bounded() -> None:
    """Whisper timestamps against exact word-by-word ground truth (Piper): mean error under 150 ms."""
    from e2e_voice.data.align import WhisperAligner

    text = "The quick brown fox, jumps over the lazy dog. Then it runs away."
    audio, truth = synthesize_concat(VoiceSpec("piper", "piper-en-us-joe"), text)
    got = WhisperAligner(threads=2).align(audio, text)
    assert [w for w, _, _ in got] == [w for w, _, _ in truth]
    err = [abs(a[1] - b[1]) for a, b in zip(got, truth)] + [abs(a[2] - b[2]) for a, b in zip(got, truth)]
    assert float(np.mean(err)) < 0.15, err
