"""Each metric on signals with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from eval import metrics as m

SR = 24_000


def tone(f0: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


def test_segments_and_latency() -> None:
    # The system answers 0.30 s after the user's turn ends at 1.0 s.
    audio = np.concatenate([silence(1.3), tone(200, 1.0), silence(0.5)])
    segs = m.speech_segments(audio, SR)
    assert len(segs) == 1
    assert segs[0][0] == pytest.approx(1.3, abs=0.021) and segs[0][1] == pytest.approx(2.3, abs=0.021)
    assert m.response_latency(segs, user_end=1.0) == pytest.approx(0.3, abs=0.021)
    assert m.response_latency(segs, user_end=2.5) is None


def test_overlapping_speech_is_not_a_response() -> None:
    audio = np.concatenate([tone(200, 1.5), silence(0.5), tone(200, 0.5)])
    segs = m.speech_segments(audio, SR)
    assert m.response_latency(segs, user_end=1.0) == pytest.approx(1.0, abs=0.021)


def test_gap_bridging() -> None:
    audio = np.concatenate([tone(200, 0.5), silence(0.1), tone(200, 0.5), silence(0.4), tone(200, 0.5)])
    segs = m.speech_segments(audio, SR)  # the 0.1 s gap is bridged, the 0.4 s one is a pause
    assert len(segs) == 2


def test_takeover() -> None:
    audio = np.concatenate([silence(1.0), tone(200, 1.5), silence(1.0)])
    segs = m.speech_segments(audio, SR)
    assert m.takes_turn(segs, 0.8, 3.0)
    short = m.speech_segments(np.concatenate([silence(1.0), tone(200, 0.5), silence(1.0)]), SR)
    assert not m.takes_turn(short, 0.8, 3.0, words=2)
    assert m.takes_turn(short, 0.8, 3.0, words=4)


def test_stop_latency() -> None:
    audio = np.concatenate([tone(200, 2.2), silence(1.0)])
    segs = m.speech_segments(audio, SR)
    assert m.stop_latency(segs, interrupt_start=2.0, audio_end=3.2) == pytest.approx(0.2, abs=0.021)
    assert m.stop_latency(segs, interrupt_start=2.5, audio_end=3.2) == 0.0
    never = m.speech_segments(tone(200, 3.0), SR)
    assert m.stop_latency(never, interrupt_start=1.0, audio_end=3.0) is None


def test_prosody_known_f0() -> None:
    p = m.prosody(tone(150, 1.0), SR, words=3)
    assert p.f0_mean_st == pytest.approx(12 * np.log2(1.5), abs=0.05)
    assert p.f0_std_st < 0.05 and p.f0_range_st < 0.1
    assert p.intensity_std_db < 0.5
    assert p.speaking_rate_wps == pytest.approx(3.0, rel=0.05)
    assert p.pause_count == 0


def test_prosody_glide_and_pauses() -> None:
    # An exponential glide from 100 to 200 Hz spans 12 semitones; 5th-95th percentile covers 90% of it.
    t = np.arange(SR * 2) / SR
    f = 100 * 2 ** (t / 2)
    glide = (0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR)).astype(np.float32)
    p = m.prosody(glide, SR)
    assert p.f0_range_st == pytest.approx(0.9 * 12, abs=0.5)
    with_pauses = np.concatenate([tone(150, 0.5), silence(0.3), tone(150, 0.5), silence(0.3), tone(150, 0.5)])
    q = m.prosody(with_pauses, SR)
    assert q.pause_count == 2 and q.pause_mean_s == pytest.approx(0.3, abs=0.03)


def test_prosody_needs_voicing() -> None:
    with pytest.raises(ValueError, match="no voiced frame"):
        m.prosody(silence(1.0), SR)


@pytest.mark.parametrize(
    "ref, hyp, expected",
    [
        pytest.param("the cat sat on the mat", "the cat sat on the mat", 0.0, id="exact"),
        pytest.param("It's five dollars.", "it is $5", 0.0, id="whisper-normaliser"),
        pytest.param("we went to the shop", "we went the shop", 0.2, id="deletion"),
    ],
)
def test_wer_known(ref: str, hyp: str, expected: float) -> None:
    assert m.wer([ref], [hyp]) == pytest.approx(expected)


def test_missed_words_ignore_insertions_where_wer_does_not() -> None:
    refs = ["the cat sat on the mat", "hello there"]
    hyps = ["the dog sat on the mat and then a lot more words", "Hello, there!"]
    assert m.missed_words(refs, hyps) == pytest.approx(1 / 8)  # 'cat' missed; normalised punctuation
    assert m.wer(refs, hyps) == pytest.approx(7 / 8)  # 1 substitution + 6 insertions
    assert m.missed_words(["a b c"], ["c b a"]) == pytest.approx(2 / 3)  # in order: only one word
    with pytest.raises(ValueError, match="no reference words"):
        m.missed_words([""], ["x"])


def test_percentiles() -> None:
    assert m.p50_p90([]) == (None, None)
    p50, p90 = m.p50_p90([float(x) for x in range(1, 11)])
    assert p50 == pytest.approx(5.5) and p90 == pytest.approx(9.1)


def test_bootstrap_interval_covers_the_pooled_rate_and_narrows_with_more_clips() -> None:
    rng = np.random.default_rng(0)
    words = rng.integers(5, 30, size=400).astype(float)
    errors = rng.binomial(words.astype(int), 0.2).astype(float)
    est, lo, hi = m.bootstrap_ci(errors, words)
    assert est == pytest.approx(errors.sum() / words.sum()) and lo < est < hi
    assert lo > 0.15 and hi < 0.25
    _, lo10, hi10 = m.bootstrap_ci(errors[:10], words[:10])
    assert hi10 - lo10 > 3 * (hi - lo)  # 40x fewer clips: about sqrt(40) = 6x wider
    assert m.bootstrap_ci(errors, words, seed=3) == m.bootstrap_ci(errors, words, seed=3)
    with pytest.raises(ValueError, match="non-empty"):
        m.bootstrap_ci([], [])
    with pytest.raises(ValueError, match="non-empty"):
        m.bootstrap_ci([1.0, 2.0], [3.0, 4.0], baseline_errors=[1.0])
    with pytest.raises(ValueError, match="sum to 0"):
        m.bootstrap_ci([0.0], [0.0])
