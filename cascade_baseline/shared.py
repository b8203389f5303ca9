"""Heavy cascade models loaded once per process and shared by every conversation (issue #6).

A :class:`~cascade_baseline.system.CascadeSystem` is cheap: two worker threads, VAD state, history. Its
STT, LLM and TTS are not (8-25 s to load on 2 CPU cores). The server builds one system per connection,
so it takes these from :class:`SharedModels` instead of loading them again.

What is shared and what is not:

- shared (read-only weights): the STT, LLM and TTS objects, and the Silero VAD's onnxruntime session;
- per conversation: everything in the ``CascadeSystem`` (VAD recurrent state, segmenter, history, turns,
  queues, threads) and the turn detector.

Each shared stage is wrapped in a lock. Not every backend is safe to call from two threads at once
(espeak-ng, behind Kokoro, Piper and :class:`~cascade_baseline.tts.EspeakTTS`, keeps global state),
and on a 2-core machine running two generations side by side only halves each one's speed. So two
conversations' calls to one stage take turns; a stage of one conversation never waits for a *different*
stage of another. The VAD session is not locked: onnxruntime's ``InferenceSession.run`` is thread-safe
and the VAD's state lives in each conversation's :class:`~cascade_baseline.vad.SileroVAD`.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class LockedSTT:
    """An STT whose ``transcribe`` calls run one at a time."""

    def __init__(self, inner: Any, lock: threading.Lock | None = None) -> None:
        self.inner, self.lock = inner, lock or threading.Lock()

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        with self.lock:
            return str(self.inner.transcribe(audio, sample_rate))


class LockedTTS:
    """A TTS whose ``synthesize`` calls run one at a time (``sample_rate`` is read from the engine)."""

    def __init__(self, inner: Any, lock: threading.Lock | None = None) -> None:
        self.inner, self.lock = inner, lock or threading.Lock()

    @property
    def sample_rate(self) -> int:
        return int(self.inner.sample_rate)

    def synthesize(self, text: str) -> np.ndarray:
        with self.lock:
            return np.asarray(self.inner.synthesize(text))


class LockedLLM:
    """A streaming LLM that generates one answer at a time; the lock is held for the whole stream.

    ``gate`` (pause while the first phrase is synthesized) is forwarded only to a backend that takes it,
    so the cascade's check for it sees the backend's behaviour through :attr:`takes_gate`.
    """

    def __init__(self, inner: Any, lock: threading.Lock | None = None) -> None:
        self.inner, self.lock = inner, lock or threading.Lock()
        self.takes_gate = "gate" in inspect.signature(inner.stream).parameters

    def stream(
        self,
        history: list[dict[str, str]],
        cancel: threading.Event | None = None,
        gate: threading.Event | None = None,
        **kwargs: Any,
    ) -> Iterator[str]:
        if self.takes_gate and gate is not None:
            kwargs["gate"] = gate
        # A consumer that stops early (barge-in) closes this generator, which releases the lock.
        with self.lock:
            yield from self.inner.stream(history, cancel, **kwargs)


@dataclass
class SharedModels:
    """The loaded stages of one cascade configuration, each behind its lock.

    Attributes:
        stt: :class:`LockedSTT` around the configured STT.
        llm: :class:`LockedLLM` around the configured LLM.
        tts: :class:`LockedTTS` around the configured TTS engine.
        vad_session: the Silero VAD's onnxruntime session (thread-safe, no state of its own).
        warmed: whether a system built on these models ran the warm-up already (once is enough).
    """

    stt: LockedSTT
    llm: LockedLLM
    tts: LockedTTS
    vad_session: Any
    warmed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
