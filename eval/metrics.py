"""Metrics for full-duplex systems: speech activity, latency, turn-taking, prosody, WER.

Times are seconds from the start of the conversation. Turn-taking follows Full-Duplex-Bench (v1): a
system "takes the turn" in a window when it speaks for at least 1 s or says more than 3 words there.

Speech activity of the system's own channel is measured by frame energy, not a neural VAD: the channel
holds only the system's output, so silence is digital silence or codec noise far below speech, and an
energy threshold (default -45 dBFS over 20 ms frames) is exact enough and has no model to mis-fire.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from e2e_voice.stt.whisper import word_error_rate, word_hits

FDB_TURN_SECONDS = 1.0
"""Full-Duplex-Bench: a response of at least this much speech takes the turn."""
FDB_TURN_WORDS = 3
"""Full-Duplex-Bench: a response of more than this many words takes the turn."""


@dataclass(frozen=True)
class ActivitySettings:
    """Energy speech-activity detector settings.

    Args:
        frame_ms: analysis frame.
        threshold_db: frames louder than this (dBFS, RMS) are speech.
        min_gap_ms: gaps shorter than this inside speech are bridged (stop consonants, short closures).
        min_speech_ms: speech runs shorter than this are dropped (clicks).
    """

    frame_ms: float = 20.0
    threshold_db: float = -45.0
    min_gap_ms: float = 150.0
    min_speech_ms: float = 40.0


def _frame_db(audio: np.ndarray, sr: int, frame_ms: float) -> tuple[np.ndarray, float]:
    hop = max(1, int(sr * frame_ms / 1000))
    x = np.asarray(audio, np.float64).reshape(-1)
    n = len(x) // hop
    if n == 0:
        return np.zeros(0), hop / sr
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10)), hop / sr


def speech_segments(
    audio: np.ndarray, sr: int, settings: ActivitySettings | None = None
) -> list[tuple[float, float]]:
    """``(start, end)`` seconds of speech in a single channel (energy detector, gaps bridged)."""
    s = settings or ActivitySettings()
    db, step = _frame_db(audio, sr, s.frame_ms)
    active = db > s.threshold_db
    segments: list[list[float]] = []
    for i, on in enumerate(active):
        if not on:
            continue
        start, end = i * step, (i + 1) * step
        if segments and start - segments[-1][1] < s.min_gap_ms / 1000:
            segments[-1][1] = end
        else:
            segments.append([start, end])
    return [(a, b) for a, b in segments if b - a >= s.min_speech_ms / 1000]


def speech_seconds(segments: list[tuple[float, float]], start: float = 0.0, end: float = math.inf) -> float:
    """Seconds of speech inside ``[start, end)``."""
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in segments)


def first_onset(segments: list[tuple[float, float]], after: float) -> float | None:
    """Start of the first speech at or after ``after`` (speech running at ``after`` counts from it)."""
    for a, b in segments:
        if b > after:
            return max(a, after)
    return None


def response_latency(
    segments: list[tuple[float, float]], user_end: float, min_latency: float = 0.0
) -> float | None:
    """Output start minus input end (Full-Duplex-Bench): the system's first speech after the user stops.

    Speech that was already running when the user stopped (overlap) is not a response; the next onset is.
    """
    for a, _ in segments:
        if a >= user_end + min_latency:
            return a - user_end
    return None


def stop_latency(
    segments: list[tuple[float, float]], interrupt_start: float, audio_end: float
) -> float | None:
    """Seconds from the user's interruption onset until the system's speech stops (0 if it was silent).

    Returns None when the system was still speaking at the end of the recording (it never stopped).
    """
    for a, b in segments:
        if a <= interrupt_start < b:
            return None if b >= audio_end - 0.05 else b - interrupt_start
    return 0.0


def takes_turn(
    segments: list[tuple[float, float]], start: float, end: float, words: int | None = None
) -> bool:
    """Full-Duplex-Bench's takeover: >= 1 s of speech, or more than 3 words, inside ``[start, end)``."""
    if speech_seconds(segments, start, end) >= FDB_TURN_SECONDS:
        return True
    return words is not None and words > FDB_TURN_WORDS


@dataclass
class Prosody:
    """Prosody of one speech signal.

    Attributes:
        f0_mean_st: mean F0 in semitones re 100 Hz (voiced frames).
        f0_std_st: standard deviation of F0 in semitones.
        f0_range_st: 5th-95th percentile range of F0 in semitones.
        intensity_std_db: standard deviation of intensity (dB) over speech frames.
        speaking_rate_wps: words per second of speech (None without a word count).
        pause_count: pauses between speech runs (silences of at least ``min_pause_s``).
        pause_mean_s: mean pause duration (0 when there is none).
        voiced_fraction: share of analysis frames with an F0.
    """

    f0_mean_st: float
    f0_std_st: float
    f0_range_st: float
    intensity_std_db: float
    speaking_rate_wps: float | None
    pause_count: int
    pause_mean_s: float
    voiced_fraction: float

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def semitones(f0_hz: np.ndarray, reference_hz: float = 100.0) -> np.ndarray:
    return 12.0 * np.log2(np.asarray(f0_hz, np.float64) / reference_hz)


def prosody(
    audio: np.ndarray,
    sr: int,
    words: int | None = None,
    min_pause_s: float = 0.15,
    f0_floor: float = 60.0,
    f0_ceiling: float = 500.0,
) -> Prosody:
    """F0 (Praat's autocorrelation pitch via parselmouth), intensity, speaking rate and pauses.

    Raises:
        ValueError: the signal has no voiced frame (no F0 statistics exist).
    """
    import parselmouth

    x = np.asarray(audio, np.float64).reshape(-1)
    sound = parselmouth.Sound(x, sampling_frequency=sr)
    pitch = sound.to_pitch(pitch_floor=f0_floor, pitch_ceiling=f0_ceiling)
    f0 = pitch.selected_array["frequency"]
    voiced = f0[f0 > 0]
    if voiced.size == 0:
        raise ValueError("no voiced frame: F0 statistics need speech (or a periodic signal)")
    st = semitones(voiced)
    p5, p95 = np.percentile(st, [5, 95])
    settings = ActivitySettings(min_gap_ms=min_pause_s * 1000)
    segments = speech_segments(x, sr, settings)
    db, _ = _frame_db(x, sr, settings.frame_ms)
    speech_db = db[db > settings.threshold_db]
    pauses = [b[0] - a[1] for a, b in itertools.pairwise(segments)]
    talk = speech_seconds(segments)
    return Prosody(
        f0_mean_st=float(st.mean()),
        f0_std_st=float(st.std()),
        f0_range_st=float(p95 - p5),
        intensity_std_db=float(speech_db.std()) if speech_db.size else 0.0,
        speaking_rate_wps=(words / talk) if words is not None and talk > 0 else None,
        pause_count=len(pauses),
        pause_mean_s=float(np.mean(pauses)) if pauses else 0.0,
        voiced_fraction=float(voiced.size / max(1, f0.size)),
    )


def whisper_normalize(text: str) -> str:
    """Whisper's English text normaliser (from transformers), as used for Whisper's own WER numbers."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return str(EnglishTextNormalizer({})(text))


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER after Whisper normalisation; empty references are skipped (error if all are)."""
    return word_error_rate(references, hypotheses, normalize=whisper_normalize)


def missed_words(references: list[str], hypotheses: list[str]) -> float:
    """Pooled missed-word rate after Whisper normalisation: reference words not heard in order, over all
    reference words. Inserted words do not count, so a system whose speech the judge hears as babble
    scores near 100 % however much the judge hallucinates (WER can go far past it)."""
    pairs = [word_hits(r, h, normalize=whisper_normalize) for r, h in zip(references, hypotheses)]
    words = sum(n for _, n in pairs)
    if not words:
        raise ValueError("no reference words to score")
    return 1.0 - sum(hit for hit, _ in pairs) / words


def p50_p90(values: list[float]) -> tuple[float | None, float | None]:
    """Median and 90th percentile (None for no values)."""
    if not values:
        return None, None
    p50, p90 = np.percentile(np.asarray(values, np.float64), [50, 90])
    return float(p50), float(p90)


def pooled_rate(errors: np.ndarray, totals: np.ndarray) -> float:
    """Errors over total (a corpus WER from per-clip word errors and reference word counts)."""
    total = float(np.sum(totals))
    if total <= 0:
        raise ValueError("pooled rate of nothing: the reference word counts sum to 0")
    return float(np.sum(errors) / total)


def bootstrap_ci(
    errors: np.ndarray | list[float],
    totals: np.ndarray | list[float],
    baseline_errors: np.ndarray | list[float] | None = None,
    n: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """A pooled rate (or its difference to a baseline on the same items) with a percentile bootstrap CI.

    Items (clips) are resampled with replacement; with ``baseline_errors`` the same resample is used for
    both systems (a paired bootstrap), so the interval is of the difference ``rate - baseline_rate``, and
    an interval wholly below 0 means fewer errors than the baseline beyond clip-sampling noise.

    Args:
        errors: per item error counts (e.g. WER x reference words).
        totals: per item reference counts.
        baseline_errors: the baseline's error counts on the same items, for a paired difference.
        n: bootstrap resamples.
        level: the interval's coverage.
        seed: the resampling seed.

    Returns:
        ``(estimate, low, high)``.

    Raises:
        ValueError: empty or mismatched inputs, or totals summing to 0.
    """
    e = np.asarray(errors, np.float64)
    t = np.asarray(totals, np.float64)
    b = None if baseline_errors is None else np.asarray(baseline_errors, np.float64)
    if e.size == 0 or e.shape != t.shape or (b is not None and b.shape != e.shape):
        raise ValueError(
            f"need equal, non-empty item arrays; got {e.shape}, {t.shape}, {None if b is None else b.shape}"
        )
    diff = e if b is None else e - b
    estimate = pooled_rate(diff, t)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, e.size, size=(n, e.size))
    sums = t[idx].sum(axis=1)
    stats = diff[idx].sum(axis=1)[sums > 0] / sums[sums > 0]
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return estimate, float(lo), float(hi)
