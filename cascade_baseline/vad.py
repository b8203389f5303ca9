"""Streaming voice activity detection: Silero VAD (ONNX) plus a start/stop state machine.

Audio arrives as 80 ms frames at 24 kHz; Silero wants 512-sample (32 ms) chunks at 16 kHz with 64
samples of left context. :class:`SileroVAD` resamples in a stream and keeps the leftover samples, so
feeding audio in any split gives the same probabilities as feeding it whole. :class:`VADSegmenter`
turns probabilities into ``start``/``stop`` events with a minimum speech time (to start) and a minimum
silence time (to stop), like Pipecat's ``start_secs``/``stop_secs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from e2e_voice.assets.registry import resolve_file
from e2e_voice.constants import SAMPLE_RATE

VAD_RATE = 16_000
CHUNK = 512  # samples per Silero step at 16 kHz (32 ms)
CONTEXT = 64  # left context Silero v5+ expects before each chunk
CHUNK_S = CHUNK / VAD_RATE


def load_session(model_path: str | None = None) -> Any:
    """The Silero VAD's onnxruntime session (explicit ``model_path`` or the bundle's ``silero-vad``)."""
    import onnxruntime as ort

    path = resolve_file("silero-vad", model_path)
    opts = ort.SessionOptions()
    # One thread: a 32 ms chunk takes ~0.3 ms, and the heavy stages need the cores.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class SileroVAD:
    """Silero VAD on onnxruntime, streaming over audio at ``sample_rate``.

    Args:
        model_path: explicit ``silero_vad.onnx``; default the bundle's ``silero-vad``.
        sample_rate: rate of the audio given to :meth:`process`.
        session: an already loaded session (:func:`load_session`) to share between conversations; it is
            only read (``run`` is thread-safe), the streaming state stays in this object.
    """

    def __init__(
        self, model_path: str | None = None, sample_rate: int = SAMPLE_RATE, session: Any = None
    ) -> None:
        self.session = session if session is not None else load_session(model_path)
        self.sample_rate = sample_rate
        self.reset()

    def reset(self) -> None:
        """Forget all streaming state (recurrent state, context, resampler, leftover samples)."""
        import soxr

        self._state: np.ndarray = np.zeros((2, 1, 128), np.float32)
        self._context: np.ndarray = np.zeros((1, CONTEXT), np.float32)
        self._pending: np.ndarray = np.zeros(0, np.float32)
        self._resampler: Any = (
            None
            if self.sample_rate == VAD_RATE
            else soxr.ResampleStream(self.sample_rate, VAD_RATE, 1, dtype="float32")
        )

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Feed mono audio (any length); returns the speech probability of every completed 32 ms chunk."""
        x = np.asarray(audio, dtype=np.float32).reshape(-1)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        self._pending = np.concatenate([self._pending, x])
        n = len(self._pending) // CHUNK
        probs = np.empty(n, np.float32)
        for i in range(n):
            chunk = np.concatenate([self._context, self._pending[None, i * CHUNK : (i + 1) * CHUNK]], axis=1)
            out, self._state = self.session.run(
                None, {"input": chunk, "state": self._state, "sr": np.array(VAD_RATE, np.int64)}
            )
            self._context = chunk[:, -CONTEXT:]
            probs[i] = float(np.asarray(out).reshape(-1)[0])
        self._pending = self._pending[n * CHUNK :]
        return probs


@dataclass
class VADEvent:
    """A change of speech state.

    Attributes:
        kind: ``start`` (speech began) or ``stop`` (speech ended).
        time: stream time in seconds of the real onset (first speech chunk / first silent chunk).
        detected: stream time in seconds at which the state machine could decide (onset + min time).
    """

    kind: Literal["start", "stop"]
    time: float
    detected: float


@dataclass
class VADSegmenter:
    """Hysteresis state machine over 32 ms speech probabilities.

    Args:
        threshold: probability at or above which a chunk is speech.
        neg_threshold: probability below which a chunk counts as silence (default ``threshold - 0.15``,
            as in Silero's own iterator); chunks in between keep the current state.
        min_speech_ms: speech must last this long before ``start`` is emitted (filters clicks).
        min_silence_ms: silence must last this long before ``stop`` is emitted (the endpointing delay).
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_ms: float = 96.0
    min_silence_ms: float = 400.0
    speaking: bool = field(init=False, default=False)
    _chunks: int = field(init=False, default=0)
    _run_start: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"cascade.vad.threshold must be in (0, 1), got {self.threshold}")
        if self.neg_threshold is None:
            self.neg_threshold = max(0.01, self.threshold - 0.15)
        if not 0.0 < self.neg_threshold <= self.threshold:
            raise ValueError(
                f"cascade.vad.neg_threshold must be in (0, threshold={self.threshold}],"
                f" got {self.neg_threshold}"
            )
        for name in ("min_speech_ms", "min_silence_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"cascade.vad.{name} must be >= 0, got {getattr(self, name)}")

    def reset(self) -> None:
        """Back to silence at stream time 0."""
        self.speaking, self._chunks, self._run_start = False, 0, None

    def update(self, probs: np.ndarray) -> list[VADEvent]:
        """Consume chunk probabilities in order; returns the events they complete."""
        assert self.neg_threshold is not None
        need_speech = max(1, round(self.min_speech_ms / 1000 / CHUNK_S))
        need_silence = max(1, round(self.min_silence_ms / 1000 / CHUNK_S))
        events = []
        for p in np.asarray(probs).reshape(-1):
            i = self._chunks
            self._chunks += 1
            # A chunk "against" the current state extends the run that may flip it; one "for" it ends it.
            against = p < self.neg_threshold if self.speaking else p >= self.threshold
            keeps = p >= self.threshold if self.speaking else p < self.neg_threshold
            if against:
                if self._run_start is None:
                    self._run_start = i
            elif keeps:
                self._run_start = None
            if self._run_start is not None and i - self._run_start + 1 >= (
                need_silence if self.speaking else need_speech
            ):
                kind: Literal["start", "stop"] = "stop" if self.speaking else "start"
                events.append(VADEvent(kind, self._run_start * CHUNK_S, (i + 1) * CHUNK_S))
                self.speaking = not self.speaking
                self._run_start = None
        return events
