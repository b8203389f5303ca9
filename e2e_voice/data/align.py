"""Word timestamps for synthesized speech.

None of the bundled engines exposes its alignment through the interfaces used here, so two methods:

``whisper`` (default): synthesize the utterance whole (natural prosody), then force it onto the known
text with faster-whisper's word timestamps (cross-attention DTW), the known text given as prompt; the
recognised words are matched to the reference words (difflib), and reference words Whisper missed get
times interpolated between their matched neighbours, in proportion to their length.

``concat``: synthesize word by word and concatenate with short gaps (longer after punctuation). The
timestamps are exact by construction, but the prosody is choppy; it is fast for tests and it is the
ground truth that measures the ``whisper`` method's error (``benchmarks/bench_align.py``).

Measured error of ``whisper`` against ``concat`` ground truth (``benchmarks/bench_align.py``, 59 words per
voice): mean absolute boundary error 257 ms for Kokoro jm_kumo, 116 ms for Piper, 191 ms for espeak-ng,
166 ms for flite — nearly all a systematic early bias of Whisper's timestamps (README, "Data").
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from e2e_voice.audio.io import resample
from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.stt.whisper import WHISPER_RATE, normalize_text
from e2e_voice.tts.engines import VoiceSpec, synthesize

Timed = tuple[str, float, float]
"""(word, start s, end s) relative to the start of the clip."""

_FRAME_S = 0.01
WORD_GAP_S = 0.06
PUNCT_GAP_S = 0.25


def speech_bounds(audio: np.ndarray, sr: int = SAMPLE_RATE, threshold_db: float = -40.0) -> tuple[int, int]:
    """First and one-past-last sample of the 10 ms frames louder than ``threshold_db`` below the peak."""
    hop = max(1, round(sr * _FRAME_S))
    n = len(audio) // hop
    if n == 0:
        return 0, 0
    frames = audio[: n * hop].reshape(n, hop)
    rms = np.sqrt(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.nonzero(20 * np.log10(rms / (rms.max() + 1e-12)) > threshold_db)[0]
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * hop), int(min(len(audio), (loud[-1] + 1) * hop))


def trim(audio: np.ndarray, sr: int = SAMPLE_RATE, margin_s: float = 0.02) -> tuple[np.ndarray, float]:
    """Cut leading/trailing silence (keeping ``margin_s``); returns (audio, seconds cut at the start)."""
    a, b = speech_bounds(audio, sr)
    if b <= a:
        return audio[:0], 0.0
    m = round(margin_s * sr)
    a, b = max(0, a - m), min(len(audio), b + m)
    return audio[a:b], a / sr


def split_words(text: str) -> list[str]:
    """Whitespace tokens that hold at least one letter or digit (punctuation stays attached)."""
    return [w for w in text.split() if re.search(r"[A-Za-z0-9]", w)]


def synthesize_concat(spec: VoiceSpec, text: str) -> tuple[np.ndarray, list[Timed]]:
    """Word-by-word synthesis: exact timestamps, choppy prosody. Returns (24 kHz audio, words)."""
    words = split_words(text)
    if not words:
        raise ValueError(f"no words to synthesize in {text!r}")
    pieces: list[np.ndarray] = []
    timed: list[Timed] = []
    t = 0
    for i, w in enumerate(words):
        clip, _ = trim(synthesize(spec, w), margin_s=0.0)
        if clip.size == 0:  # a token the engine reads as silence: give it a token duration
            clip = np.zeros(round(0.1 * SAMPLE_RATE), np.float32)
        timed.append((w, t / SAMPLE_RATE, (t + len(clip)) / SAMPLE_RATE))
        pieces.append(clip)
        t += len(clip)
        if i + 1 < len(words):
            gap = PUNCT_GAP_S if re.search(r"[.,!?;:]$", w) else WORD_GAP_S
            pieces.append(np.zeros(round(gap * SAMPLE_RATE), np.float32))
            t += len(pieces[-1])
    return np.concatenate(pieces), timed


def _spread(words: list[str], start: float, end: float) -> list[tuple[float, float]]:
    """Split ``start..end`` among ``words`` in proportion to their letter counts."""
    weights = np.array([max(1, len(normalize_text(w))) for w in words], dtype=np.float64)
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    return [(float(edges[i]), float(edges[i + 1])) for i in range(len(words))]


def match_timestamps(
    reference: list[str], recognised: list[Timed], clip_start: float, clip_end: float
) -> list[Timed]:
    """Give every reference word a time from the recognised words (matched after normalisation).

    Unmatched reference words share the span between their matched neighbours (or the clip bounds).
    """
    ref_n = [normalize_text(w) for w in reference]
    hyp_n = [normalize_text(w) for w, _, _ in recognised]
    times: list[tuple[float, float] | None] = [None] * len(reference)
    matcher = difflib.SequenceMatcher(a=ref_n, b=hyp_n, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            _, s, e = recognised[block.b + k]
            times[block.a + k] = (s, e)
    i = 0
    while i < len(reference):
        if times[i] is not None:
            i += 1
            continue
        j = i
        while j < len(reference) and times[j] is None:
            j += 1
        prev = times[i - 1] if i > 0 else None
        lo = prev[1] if prev is not None else clip_start
        nxt = times[j] if j < len(reference) else None
        hi = nxt[0] if nxt is not None else clip_end
        if hi - lo < 0.05 * (j - i):  # no room: borrow the neighbours' span
            lo = min(lo, prev[0]) if prev is not None else lo
            hi = max(hi, nxt[1]) if nxt is not None else max(hi, lo + 0.05 * (j - i))
        for k, span in zip(range(i, j), _spread(reference[i:j], lo, hi)):
            times[k] = span
        i = j
    out: list[Timed] = []
    for w, t in zip(reference, times):
        assert t is not None, w
        s, e = max(clip_start, t[0]), min(clip_end, t[1])
        out.append((w, s, max(s, e)))
    return out


@dataclass
class WhisperAligner:
    """Force-aligns known text to speech with faster-whisper word timestamps.

    Args:
        model: registry name of the Whisper model.
        model_path: explicit CTranslate2 directory.
        threads: CPU threads (0: CTranslate2 chooses).
    """

    model: str = "whisper-base"
    model_path: str | None = None
    threads: int = 0
    _model: Any = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        from faster_whisper import WhisperModel

        from e2e_voice.assets.registry import resolve

        path = resolve(self.model, self.model_path)
        self._model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=self.threads)

    def align(self, audio: np.ndarray, text: str, sample_rate: int = SAMPLE_RATE) -> list[Timed]:
        """Timestamps of the words of ``text`` (see :func:`split_words`) in ``audio`` ``[T]``."""
        reference = split_words(text)
        if not reference:
            raise ValueError(f"no words to align in {text!r}")
        a, b = speech_bounds(audio, sample_rate)
        lo, hi = a / sample_rate, max(a + 1, b) / sample_rate
        mono = resample(np.asarray(audio, dtype=np.float32), sample_rate, WHISPER_RATE)
        segments, _ = self._model.transcribe(
            mono,
            language="en",
            beam_size=1,
            word_timestamps=True,
            initial_prompt=text,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        recognised = [(w.word.strip(), float(w.start), float(w.end)) for s in segments for w in s.words or []]
        return match_timestamps(reference, recognised, lo, hi)
