"""The cascade as a :class:`e2e_voice.system.DuplexSystem`: VAD -> STT -> LLM -> TTS with barge-in.

Threads and queues (a turn flows left to right; ``step`` never runs a heavy stage itself)::

    step() thread          think thread                     speak thread
    VAD on each frame  ->  STT, LLM token stream,      ->   TTS per phrase  ->  turn.audio (deque)
    end of turn: job       aggregator cuts phrases          (resampled to 24 kHz)       |
    barge-in: cancel   <------------------------------------------------------------  step() plays 1920
                                                                                     samples per frame

Each turn carries a cancel event; barge-in sets it, the LLM stops within a token (or an SSE event),
pending phrases are dropped, and the history keeps only the words that were played.

``realtime=False`` is the offline clock: after feeding the VAD, ``step`` waits until the current turn's
answer is fully synthesized, so the output audio depends only on the input audio, never on machine speed
(the stage timings are still measured in wall time). ``realtime=True`` never waits: the assistant speaks
when its audio is ready, as in a live call.
"""

from __future__ import annotations

import inspect
import logging
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cascade_baseline.aggregate import TextAggregator
from cascade_baseline.metrics import TurnMetrics
from cascade_baseline.tts import PhraseTTS
from cascade_baseline.turn import SilenceTurnDetector, TurnDetector
from cascade_baseline.vad import SileroVAD, VADSegmenter
from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.system import DuplexSystem, SystemOutput

log = logging.getLogger(__name__)

FRAME_S = FRAME_SIZE / SAMPLE_RATE
_DONE = object()  # end-of-answer marker on the TTS queue


@dataclass
class _Segment:
    """One synthesized phrase waiting for (or in) playback."""

    text: str
    audio: np.ndarray
    played: int = 0


@dataclass
class _Turn:
    """A user turn in flight: its audio, cancel flag, produced audio and metrics."""

    metrics: TurnMetrics
    audio: np.ndarray
    history: list[dict[str, str]]
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)  # answer fully synthesized (or failed)
    gate: threading.Event = field(default_factory=threading.Event)  # clear: the LLM pauses (first TTS)
    segments: deque[_Segment] = field(default_factory=deque)
    played: list[_Segment] = field(default_factory=list)
    started: bool = False  # at least one sample played

    def spoken_text(self) -> str:
        """Words of the played segments; the partly played one is cut in proportion to its samples."""
        words: list[str] = []
        for seg in self.played:
            seg_words = seg.text.split()
            if seg.played >= len(seg.audio):
                words += seg_words
            else:
                words += seg_words[: math.floor(len(seg_words) * seg.played / max(1, len(seg.audio)))]
        return " ".join(words)


class CascadeSystem(DuplexSystem):
    """VAD -> STT -> LLM -> TTS behind the full-duplex frame interface.

    Args:
        stt: object with ``transcribe(audio, sample_rate) -> str`` (WhisperSTT, HFWhisperSTT).
        llm: object with ``stream(history, cancel) -> Iterator[str]`` (see ``e2e_voice.text.streaming``).
        tts: object with ``synthesize(text)`` and ``sample_rate`` (Kokoro, Piper, EspeakTTS).
        vad_model_path: explicit ``silero_vad.onnx`` (default: the bundle's).
        vad_session: an already loaded VAD session to share (wins over ``vad_model_path``).
        vad_threshold: speech probability threshold.
        min_speech_ms: speech needed before the VAD reports a start.
        min_silence_ms: silence needed before the VAD reports a stop (the endpointing delay).
        turn_detector: end-of-turn decision on VAD silence (default: silence alone decides).
        aggregation: ``phrase`` or ``sentence`` (see :class:`TextAggregator`).
        min_phrase_chars: shortest phrase cut at a comma.
        barge_in: whether user speech during the assistant's turn interrupts it.
        barge_in_min_ms: user speech shorter than this during the assistant's turn is a backchannel and
            does not interrupt; after this much speech the assistant stops (0: on the VAD start).
        history_turns: user/assistant exchanges kept in the LLM prompt.
        realtime: False for the deterministic offline clock (``step`` waits for pending work).
        turn_timeout_s: offline clock only: longest wait for one answer before it is marked failed.
        warmup: run every stage once at construction so the first turn is not slowed by lazy init.
        first_audio_priority: pause a local LLM (one whose ``stream`` takes ``gate``) while the first
            phrase is synthesized, so both do not share the CPU when the first audio matters most.
    """

    def __init__(
        self,
        *,
        stt: Any,
        llm: Any,
        tts: Any,
        vad_model_path: str | None = None,
        vad_session: Any = None,
        vad_threshold: float = 0.5,
        min_speech_ms: float = 96.0,
        min_silence_ms: float = 200.0,
        turn_detector: TurnDetector | None = None,
        aggregation: str = "phrase",
        min_phrase_chars: int = 16,
        barge_in: bool = True,
        barge_in_min_ms: float = 0.0,
        history_turns: int = 8,
        realtime: bool = False,
        turn_timeout_s: float = 300.0,
        warmup: bool = False,
        first_audio_priority: bool = True,
    ) -> None:
        if barge_in_min_ms < 0:
            raise ValueError(f"cascade.barge_in.min_duration_ms must be >= 0, got {barge_in_min_ms}")
        if history_turns < 0:
            raise ValueError(f"cascade.history_turns must be >= 0, got {history_turns}")
        self.stt, self.llm, self.tts = stt, llm, PhraseTTS(tts, SAMPLE_RATE)
        self.vad = SileroVAD(vad_model_path, SAMPLE_RATE, session=vad_session)
        self.segmenter = VADSegmenter(vad_threshold, None, min_speech_ms, min_silence_ms)
        self.turn_detector: TurnDetector = turn_detector or SilenceTurnDetector()
        TextAggregator(aggregation, min_phrase_chars)  # type: ignore[arg-type]  # validates early
        self.aggregation, self.min_phrase_chars = aggregation, min_phrase_chars
        self.barge_in, self.barge_in_min_s = barge_in, barge_in_min_ms / 1000
        self.history_turns, self.realtime, self.turn_timeout_s = history_turns, realtime, turn_timeout_s
        takes_gate = getattr(llm, "takes_gate", None)  # a shared, locked LLM says what its backend takes
        if takes_gate is None:
            takes_gate = "gate" in inspect.signature(llm.stream).parameters
        self._gated = first_audio_priority and bool(takes_gate)
        # Audio kept before a detected start: the start is reported min_speech_ms after the onset.
        self._pre_roll = math.ceil((min_speech_ms / 1000 + 0.3) / FRAME_S) + 1
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._phrases: queue.Queue[Any] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._think_loop, name="cascade-think", daemon=True),
            threading.Thread(target=self._speak_loop, name="cascade-speak", daemon=True),
        ]
        for t in self._threads:
            t.start()
        if warmup:
            self._warmup()
        self.reset()

    # ------------------------------------------------------------------ frame loop (caller's thread)

    def reset(self) -> None:
        """Cancel any answer in flight and start a new conversation at stream time 0."""
        active = getattr(self, "_active", None)
        if active is not None:
            active.cancel.set()
            active.done.wait(self.turn_timeout_s)
        self.vad.reset()
        self.segmenter.reset()
        self.history: list[dict[str, str]] = []
        self.turns: list[TurnMetrics] = []
        self._active: _Turn | None = None
        self._n = 0  # frames consumed
        self._frames: deque[tuple[int, np.ndarray]] = deque()
        self._speech_start: float | None = None  # stream time of the current user speech onset
        self._t0 = time.perf_counter()

    def now(self) -> float:
        """Wall-clock seconds since :meth:`reset`."""
        return time.perf_counter() - self._t0

    def step(self, user_frame: np.ndarray) -> SystemOutput:
        """Feed one 80 ms user frame; return 80 ms of assistant audio, new text and events."""
        frame = self.check_frame(user_frame)
        arrived = self.now()
        n, self._n = self._n, self._n + 1
        frame_end = (n + 1) * FRAME_S
        self._frames.append((n, frame))
        events: dict[str, float] = {}

        for ev in self.segmenter.update(self.vad.process(frame)):
            if ev.kind == "start":
                self._speech_start = ev.time
                events["user_start"] = ev.time
            else:
                start, self._speech_start = self._speech_start or 0.0, None
                events["user_end"] = ev.time
                self._on_speech_end(start, ev.time, arrived - (frame_end - ev.time), events)
        if not self.segmenter.speaking:
            while len(self._frames) > self._pre_roll:
                self._frames.popleft()

        # Barge-in: enough user speech while the assistant's turn is live.
        turn = self._active
        if (
            turn is not None
            and self.barge_in
            and self._speech_start is not None
            and self._speech_start >= turn.metrics.user_end
            and frame_end - self._speech_start >= self.barge_in_min_s
        ):
            self._interrupt(turn, frame_end, events)

        turn = self._active
        if turn is not None and not self.realtime and not turn.done.wait(self.turn_timeout_s):
            turn.cancel.set()
            turn.segments.clear()
            self._fail(
                turn.metrics,
                "timeout",
                f"no answer within {self.turn_timeout_s} s; raise cascade.turn_timeout_s",
            )
            self._finish(turn, events)
        out, text = self._play(n, events)
        return SystemOutput(audio=out, text=text, events=events)

    def _on_speech_end(self, start: float, end: float, silence_wall: float, events: dict[str, float]) -> None:
        turn = self._active
        if turn is not None:
            # Speech during the assistant's turn that did not interrupt: a backchannel ("mm-hm"), or
            # ignored speech when barge-in is off. Either way it does not start a new turn.
            events["backchannel" if self.barge_in else "ignored_speech"] = start
            return
        first = max(0, math.floor((start - 0.2) / FRAME_S))
        audio = np.concatenate([f for i, f in self._frames if i >= first])
        if not self.turn_detector.is_end_of_turn(audio, SAMPLE_RATE, self._n * FRAME_S - end):
            return  # a learned detector may wait for more; VAD silence alone always ends the turn
        metrics = TurnMetrics(
            index=len(self.turns),
            user_start=start,
            user_end=end,
            silence_onset=silence_wall,
            vad_end=self.now(),
            realtime=self.realtime,
        )
        self.turns.append(metrics)
        turn = _Turn(metrics=metrics, audio=audio, history=self._history_window())
        self._active = turn
        self._jobs.put(turn)
        events["end_of_turn"] = end

    def _history_window(self) -> list[dict[str, str]]:
        return [dict(m) for m in self.history[len(self.history) - 2 * self.history_turns :]]

    def _play(self, n: int, events: dict[str, float]) -> tuple[np.ndarray, str]:
        out = np.zeros(FRAME_SIZE, np.float32)
        turn = self._active
        if turn is None:
            return out, ""
        pos, texts = 0, []
        while pos < FRAME_SIZE and turn.segments:
            seg = turn.segments[0]
            if seg.played == 0:
                texts.append(seg.text)
                turn.played.append(seg)
                if not turn.started:
                    turn.started = True
                    turn.metrics.first_audio_stream = n * FRAME_S + pos / SAMPLE_RATE
                    events["assistant_start"] = turn.metrics.first_audio_stream
            k = min(FRAME_SIZE - pos, len(seg.audio) - seg.played)
            out[pos : pos + k] = seg.audio[seg.played : seg.played + k]
            seg.played += k
            pos += k
            if seg.played >= len(seg.audio):
                turn.segments.popleft()
        if pos and turn.metrics.first_audio_out is None:
            turn.metrics.first_audio_out = self.now()
        if turn.done.is_set() and not turn.segments:
            self._finish(turn, events)
        return out, " ".join(texts)

    def _interrupt(self, turn: _Turn, at: float, events: dict[str, float]) -> None:
        turn.cancel.set()
        turn.segments.clear()
        turn.metrics.interrupted = True
        if turn.started:
            turn.metrics.stopped_stream = at
        events["barge_in"] = at
        self._finish(turn, events)

    def _finish(self, turn: _Turn, events: dict[str, float]) -> None:
        m = turn.metrics
        m.spoken_text = turn.spoken_text()
        if m.user_text and not m.failed:
            self.history.append({"role": "user", "content": m.user_text})
            if m.spoken_text:
                self.history.append({"role": "assistant", "content": m.spoken_text})
        if m.failed:
            events["turn_failed"] = float(m.index)
        events["turn_done"] = float(m.index)
        log.info("turn %d%s: %s", m.index, " (interrupted)" if m.interrupted else "", m.to_dict())
        self._active = None

    def _fail(self, m: TurnMetrics, stage: str, message: str) -> None:
        if not m.failed:
            m.failed, m.error = True, f"{stage}: {message}"
            log.error("turn %d failed in %s: %s", m.index, stage, message)

    # ------------------------------------------------------------------ workers

    def _think_loop(self) -> None:
        """STT, then the LLM stream cut into phrases for the speak thread."""
        while True:
            turn = self._jobs.get()
            if turn is None:
                self._phrases.put(None)
                return
            m = turn.metrics
            try:
                stage = "stt"
                m.user_text = self.stt.transcribe(turn.audio, SAMPLE_RATE).strip()
                m.stt_final = self.now()
                if m.user_text and not turn.cancel.is_set():
                    stage = "llm"
                    history = [*turn.history, {"role": "user", "content": m.user_text}]
                    agg = TextAggregator(self.aggregation, self.min_phrase_chars)  # type: ignore[arg-type]
                    turn.gate.set()
                    gate = {"gate": turn.gate} if self._gated else {}
                    for piece in self.llm.stream(history, turn.cancel, **gate):
                        if turn.cancel.is_set():
                            break
                        if m.llm_first_token is None and piece.strip():
                            m.llm_first_token = self.now()
                        m.assistant_text += piece
                        for phrase in agg.push(piece):
                            self._release(turn, phrase)
                    tail = agg.flush()
                    if tail and not turn.cancel.is_set():
                        self._release(turn, tail)
                    m.assistant_text = m.assistant_text.strip()
            except Exception as e:
                self._fail(m, stage, f"{type(e).__name__}: {e}")
            self._phrases.put((turn, _DONE))

    def _release(self, turn: _Turn, phrase: str) -> None:
        if turn.metrics.first_sentence is None:
            turn.metrics.first_sentence = self.now()
            turn.gate.clear()  # the speak thread opens it again once the first audio exists
        self._phrases.put((turn, phrase))

    def _speak_loop(self) -> None:
        """Synthesize phrases in order; a cancelled turn's phrases are dropped."""
        while True:
            item = self._phrases.get()
            if item is None:
                return
            turn, phrase = item
            if phrase is _DONE:
                turn.done.set()
                continue
            if turn.cancel.is_set() or turn.metrics.failed:
                continue
            try:
                audio = self.tts.synthesize(phrase)
            except Exception as e:
                self._fail(turn.metrics, "tts", f"{type(e).__name__}: {e}")
                continue
            finally:
                turn.gate.set()
            if turn.metrics.tts_first_audio is None:
                turn.metrics.tts_first_audio = self.now()
            if not turn.cancel.is_set():
                turn.segments.append(_Segment(phrase, audio))

    def _warmup(self) -> None:
        t = time.perf_counter()
        noise = np.random.default_rng(0).normal(0, 0.01, SAMPLE_RATE).astype(np.float32)
        self.stt.transcribe(noise, SAMPLE_RATE)
        for _ in self.llm.stream([{"role": "user", "content": "Hi."}]):
            break
        self.tts.synthesize("Hello there.")
        log.info("cascade warm-up took %.2f s", time.perf_counter() - t)

    # ------------------------------------------------------------------ DuplexSystem extras

    def busy(self) -> bool:
        """Whether an answer is pending or still playing."""
        return self._active is not None

    def metrics(self) -> list[dict[str, Any]]:
        """Per-turn metrics as plain dicts (fields plus ``stages`` in seconds)."""
        return [m.to_dict() for m in self.turns]

    def close(self) -> None:
        """Cancel work in flight and stop the worker threads (idempotent)."""
        if not self._threads[0].is_alive():
            return
        if self._active is not None:
            self._active.cancel.set()
        self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=self.turn_timeout_s)
