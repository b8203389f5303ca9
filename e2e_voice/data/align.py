"""Word timestamps for synthesized speech.

None of the bundled engines exposes its alignment through the interfaces used here, so two methods:

``whisper`` (default): synthesize the utterance whole (natural prosody), then force-align the known
text to it with Whisper's cross-attention (DTW over the text tokens, the step faster-whisper's word
timestamps run after decoding; here nothing is decoded, so every word of the text gets a time and the
order is exact). The encoder always costs a 30 s window, so the clips of a conversation are packed into
as few windows as fit (:meth:`WhisperAligner.align_many`) and the words are handed back to their clip by
the known text. Whisper's times come early by an engine-dependent constant; :func:`apply_offset` adds a
measured per-engine [start, end] correction (``alignment.offsets_s`` in ``configs/synth_data.yaml``).

``concat``: synthesize word by word and concatenate with short gaps (longer after punctuation). The
timestamps are exact by construction, but the prosody is choppy; it is fast for tests and it is the
ground truth that measures the ``whisper`` method's error (``benchmarks/bench_align.py``, which also
fits the offsets on one set of sentences and reports the error on another; numbers in the README, "Data").
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


WINDOW_S = 29.0
"""Longest window aligned in one pass: Whisper's encoder always sees 30 s (a second of slack)."""
BATCH_GAP_S = 0.5
"""Silence between clips packed into one window (keeps a word from straddling two clips)."""
MAX_WINDOW_TOKENS = 400
"""Text tokens per window: Whisper's decoder context is 448, less the start sequence and end token."""


def apply_offset(timed: list[Timed], offset: tuple[float, float], clip_end: float) -> list[Timed]:
    """Correct a measured constant bias: add ``offset`` = (start s, end s) to every word's start and end.

    Whisper's cross-attention timestamps come early by an engine-dependent constant
    (``benchmarks/bench_align.py`` measures it against exact ground truth). Times stay in ``0..clip_end``,
    in order, and a word never ends after the next one starts.
    """
    d_start, d_end = offset
    if not timed or (d_start == 0.0 and d_end == 0.0):
        return list(timed)
    starts = [min(max(0.0, s + d_start), clip_end) for _, s, _ in timed]
    starts = [float(x) for x in np.maximum.accumulate(starts)]
    out: list[Timed] = []
    for k, (w, _, e) in enumerate(timed):
        nxt = starts[k + 1] if k + 1 < len(timed) else clip_end
        out.append((w, round(starts[k], 3), round(max(starts[k], min(e + d_end, nxt, clip_end)), 3)))
    return out


def pack_windows(durations: list[float], tokens: list[int]) -> list[list[int]]:
    """Greedy, in order: indices of the clips that share each window (at most :data:`WINDOW_S` of audio
    with :data:`BATCH_GAP_S` between clips, at most :data:`MAX_WINDOW_TOKENS` text tokens).

    A clip too long for a window gets a window of its own (and is aligned on its own).
    """
    windows: list[list[int]] = []
    dur = tok = 0.0
    for i, (d, n) in enumerate(zip(durations, tokens)):
        if windows and dur + BATCH_GAP_S + d <= WINDOW_S and tok + n <= MAX_WINDOW_TOKENS:
            windows[-1].append(i)
            dur += BATCH_GAP_S + d
            tok += n
        else:
            windows.append([i])
            dur, tok = d, n
    return windows


@dataclass
class WhisperAligner:
    """Force-aligns known text to speech with Whisper's cross-attention (DTW), no decoding.

    The known text is tokenised word by word and aligned to the audio directly (CTranslate2's
    ``Whisper.align``, which faster-whisper's word timestamps use after decoding): one encoder pass and one
    decoder pass per window, whatever the number of words. Short clips are packed into one window
    (:meth:`align_many`) since the encoder costs a full 30 s window however short the clip; a clip longer
    than a window falls back to transcription with word timestamps (:meth:`transcribe_align`).

    Args:
        model: registry name of the Whisper model.
        model_path: explicit CTranslate2 directory.
        threads: CPU threads (0: CTranslate2 chooses).
    """

    model: str = "whisper-base"
    model_path: str | None = None
    threads: int = 0
    _model: Any = field(init=False, repr=False, default=None)
    _tokenizer: Any = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        from e2e_voice.assets.registry import resolve

        path = resolve(self.model, self.model_path)
        self._model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=self.threads)
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe", language="en"
        )

    def _word_tokens(self, words: list[str]) -> list[list[int]]:
        # each word on its own with its leading space, so every token belongs to exactly one word
        return [self._tokenizer.encode(" " + w) for w in words]

    def align(self, audio: np.ndarray, text: str, sample_rate: int = SAMPLE_RATE) -> list[Timed]:
        """Timestamps of the words of ``text`` (see :func:`split_words`) in ``audio`` ``[T]``."""
        return self.align_many([(audio, text)], sample_rate)[0]

    def align_many(
        self, clips: list[tuple[np.ndarray, str]], sample_rate: int = SAMPLE_RATE
    ) -> list[list[Timed]]:
        """:meth:`align` for several clips, packed into as few Whisper windows as fit.

        Each clip's speech (leading/trailing silence cut) is placed in the window after
        :data:`BATCH_GAP_S` of silence; the words of all clips are aligned in one pass and handed back to
        their clip by the known text (each clip's tokens are a known span), then clamped to the clip.

        Returns:
            One list of (word, start s, end s) per clip, relative to the start of that clip.
        """
        refs = [split_words(text) for _, text in clips]
        for (_, text), ref in zip(clips, refs):
            if not ref:
                raise ValueError(f"no words to align in {text!r}")
        tokens = [self._word_tokens(ref) for ref in refs]
        bounds = [speech_bounds(np.asarray(a), sample_rate) for a, _ in clips]
        bounds = [(a, max(a + 1, b)) for a, b in bounds]
        durations = [(b - a) / sample_rate for a, b in bounds]
        out: list[list[Timed]] = [[] for _ in clips]
        for window in pack_windows(durations, [sum(map(len, t)) for t in tokens]):
            if len(window) == 1 and durations[window[0]] > WINDOW_S:
                i = window[0]
                out[i] = self.transcribe_align(clips[i][0], clips[i][1], sample_rate)
                continue
            gap = np.zeros(round(BATCH_GAP_S * WHISPER_RATE), np.float32)
            pieces: list[np.ndarray] = []
            offsets: list[float] = []  # where each clip's speech starts in the window, s
            for i in window:
                a, b = bounds[i]
                speech = resample(np.asarray(clips[i][0][a:b], dtype=np.float32), sample_rate, WHISPER_RATE)
                if pieces:
                    pieces.append(gap)
                offsets.append(sum(len(p) for p in pieces) / WHISPER_RATE)
                pieces.append(speech)
            times = self._force_align(np.concatenate(pieces), [t for i in window for t in tokens[i]])
            k = 0
            for i, off in zip(window, offsets):
                lo, hi = bounds[i][0] / sample_rate, bounds[i][1] / sample_rate
                clip: list[Timed] = []
                for w in refs[i]:
                    s, e = times[k]
                    k += 1
                    s = min(max(lo, s - off + lo), hi)
                    clip.append((w, round(s, 3), round(min(max(s, e - off + lo), hi), 3)))
                out[i] = clip
        return out

    def _force_align(self, audio16: np.ndarray, word_tokens: list[list[int]]) -> list[tuple[float, float]]:
        """(start, end) in seconds of each word (given as its tokens) in ``audio16`` (16 kHz, <= 30 s)."""
        from faster_whisper.audio import pad_or_trim

        fe = self._model.feature_extractor
        features = fe(audio16)[..., :-1]
        num_frames = features.shape[-1]
        encoded = self._model.encode(pad_or_trim(features))
        flat = [t for ws in word_tokens for t in ws]
        result = self._model.model.align(encoded, self._tokenizer.sot_sequence, [flat], num_frames)[0]
        text_idx = np.array([p[0] for p in result.alignments])
        time_idx = np.array([p[1] for p in result.alignments])
        jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
        jump_times = time_idx[jumps] / self._model.tokens_per_second  # start of each token (+ end token)
        assert len(jump_times) >= len(flat) + 1, (len(jump_times), len(flat))
        edges = np.concatenate([[0], np.cumsum([len(ws) for ws in word_tokens])])
        return [
            (float(jump_times[edges[j]]), float(jump_times[edges[j + 1]])) for j in range(len(word_tokens))
        ]

    def transcribe_align(self, audio: np.ndarray, text: str, sample_rate: int = SAMPLE_RATE) -> list[Timed]:
        """Word timestamps by transcription (any length): faster-whisper's word timestamps with the text
        as prompt, matched to the reference words (:func:`match_timestamps`). Slower than :meth:`align`."""
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
