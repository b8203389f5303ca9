"""The whole cascade behind the DuplexSystem interface: turns, timings, barge-in, backchannels, failures.

Real models (Whisper base, SmolLM2 bf16, espeak-ng TTS for speed) on the offline clock, so the output
audio is deterministic; only the failure test uses the local fake HTTP LLM.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cascade_baseline.metrics import STAGES
from cascade_baseline.system import CascadeSystem
from cascade_baseline.tts import EspeakTTS
from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.converse import ConversationResult, converse
from e2e_voice.stt.whisper import WhisperSTT
from e2e_voice.text.streaming import OpenAIChat, TransformersChat
from tests.cascade_fakes import ChatServer, serve_chat
from tests.helpers import espeak_speech

pytestmark = pytest.mark.slow

MIN_SPEECH_MS = 96.0
MIN_SILENCE_MS = 200.0


def speech(text: str) -> np.ndarray:
    """espeak-ng speech trimmed to its first and last loud sample (so onsets are known exactly)."""
    audio = espeak_speech(text)
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[loud[0] : loud[-1] + 1]


def script(*parts: str | float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Join sentences and silences (floats, seconds); returns audio and each sentence's (start, end)."""
    chunks, spans, t = [], [], 0.0
    for p in parts:
        a = np.zeros(int(p * SAMPLE_RATE), np.float32) if isinstance(p, float) else speech(p)
        if isinstance(p, str):
            spans.append((t, t + len(a) / SAMPLE_RATE))
        chunks.append(a)
        t += len(a) / SAMPLE_RATE
    return np.concatenate(chunks), spans


@pytest.fixture(scope="module")
def stt() -> WhisperSTT:
    return WhisperSTT()


@pytest.fixture(scope="module")
def llm() -> TransformersChat:
    return TransformersChat(dtype="bfloat16", max_new_tokens=40)


@pytest.fixture
def make_system(stt: WhisperSTT, llm: Any) -> Iterator[Any]:
    made: list[CascadeSystem] = []

    def make(**kwargs: Any) -> CascadeSystem:
        kwargs.setdefault("llm", llm)
        system = CascadeSystem(
            stt=stt,
            tts=EspeakTTS(),
            min_speech_ms=MIN_SPEECH_MS,
            min_silence_ms=MIN_SILENCE_MS,
            **kwargs,
        )
        made.append(system)
        return system

    yield make
    for s in made:
        s.close()


def assistant_active(result: ConversationResult, t0: float, t1: float) -> bool:
    a = result.audio[0, int(t0 * SAMPLE_RATE) : int(t1 * SAMPLE_RATE)]
    return bool(a.size) and float(np.sqrt(np.mean(a**2))) > 0.01


def test_one_turn_timings_complete_and_ordered(make_system: Any) -> None:
    system = make_system()
    audio, spans = script(0.5, "What is the capital of France?", 4.0)
    result = converse(system, audio, realtime=False, progress=False)
    assert len(result.metrics) == 1
    m = result.metrics[0]
    assert not m["failed"] and not m["interrupted"], m
    assert "france" in m["user_text"].lower()
    assert "Paris" in m["assistant_text"]
    times = [m[k] for k in (*STAGES, "first_audio_out")]
    assert all(t is not None for t in times), m
    assert times == sorted(times), m
    assert all(v is not None and v >= 0 for k, v in m["stages"].items()), m["stages"]
    # user_end is the real end of speech (within VAD resolution), and the answer follows it
    assert abs(m["user_end"] - spans[0][1]) < 0.15
    # Output frame k shares input frame k's time slot (Moshi's stereo convention), so the answer can
    # appear up to one frame before the end of the input frame that completed the VAD's silence.
    frame_s = FRAME_SIZE / SAMPLE_RATE
    assert m["first_audio_stream"] >= m["user_end"] + MIN_SILENCE_MS / 1000 - frame_s - 0.04
    assert not assistant_active(result, 0.0, m["first_audio_stream"])
    assert assistant_active(result, m["first_audio_stream"], m["first_audio_stream"] + 1.0)
    assert m["spoken_text"] == " ".join(m["assistant_text"].split())
    assert system.history == [
        {"role": "user", "content": m["user_text"]},
        {"role": "assistant", "content": m["spoken_text"]},
    ]
    assert any(e.kind == "assistant_text" for e in result.events)


@pytest.mark.parametrize(
    "barge_in_min_ms", [pytest.param(0.0, id="immediate"), pytest.param(400.0, id="400ms")]
)
def test_barge_in_stops_assistant_within_bound(make_system: Any, barge_in_min_ms: float) -> None:
    system = make_system(barge_in_min_ms=barge_in_min_ms)
    # The answer starts ~0.25 s after the question ends; the user cuts in 1.2 s after the question.
    audio, spans = script(
        0.5, "Tell me about the history of Paris.", 1.2, "Actually tell me about Berlin.", 5.0
    )
    result = converse(system, audio, realtime=False, progress=False)
    first, second = result.metrics[0], result.metrics[1]
    onset = spans[1][0]
    assert first["interrupted"] and not second["interrupted"], result.metrics
    assert assistant_active(result, onset - 0.3, onset), "the assistant was not speaking at the barge-in"
    # Bound: VAD start (min speech + one 32 ms chunk + resampler) + barge-in min duration + one frame.
    bound = (MIN_SPEECH_MS + barge_in_min_ms) / 1000 + 0.032 + 0.02 + FRAME_SIZE / SAMPLE_RATE
    stopped = first["stopped_stream"]
    assert stopped - onset <= bound, (stopped - onset, bound)
    # Measured in the output audio: no assistant sample between the stop and the next answer.
    assistant = result.audio[0]
    next_start = int(second["first_audio_stream"] * SAMPLE_RATE)
    silent_from = int(stopped * SAMPLE_RATE)
    assert not np.any(assistant[silent_from:next_start])
    last_sample = np.flatnonzero(assistant[:next_start])[-1] / SAMPLE_RATE
    assert last_sample - onset <= bound
    # History keeps what was played: a strict prefix of the generated answer.
    spoken, generated = first["spoken_text"].split(), first["assistant_text"].split()
    assert 0 < len(spoken) < len(generated) and generated[: len(spoken)] == spoken
    assert system.history[1] == {"role": "assistant", "content": first["spoken_text"]}
    assert assistant_active(result, second["first_audio_stream"], second["first_audio_stream"] + 0.5)


@pytest.mark.parametrize(
    "barge_in_min_ms, interrupted",
    [pytest.param(800.0, False, id="backchannel-ignored"), pytest.param(0.0, True, id="no-min-interrupts")],
)
def test_backchannel(make_system: Any, barge_in_min_ms: float, interrupted: bool) -> None:
    system = make_system(barge_in_min_ms=barge_in_min_ms)
    audio, spans = script(0.5, "Tell me about the history of Paris.", 1.2, "Okay.", 5.0)
    assert spans[1][1] - spans[1][0] < 0.6  # the backchannel is short
    result = converse(system, audio, realtime=False, progress=False)
    first = result.metrics[0]
    assert first["interrupted"] is interrupted, first
    if not interrupted:
        assert len(result.metrics) == 1  # "okay" is not a new turn
        assert any(e.kind == "backchannel" for e in result.events)
        assert first["spoken_text"] == " ".join(first["assistant_text"].split())
        assert assistant_active(result, spans[1][1], spans[1][1] + 0.5)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    yield from serve_chat()


def test_failing_backend_fails_one_turn_and_conversation_continues(
    make_system: Any, server: ChatServer
) -> None:
    server.plan.append("500")  # the first request fails, the second succeeds
    system = make_system(llm=OpenAIChat(base_url=f"{server.url}/v1", timeout_s=5.0))
    audio, _ = script(0.5, "What is the capital of France?", 2.0, "What is the capital of Spain?", 5.0)
    result = converse(system, audio, realtime=False, progress=False)
    assert len(result.metrics) == 2, [
        (m["user_start"], m["user_end"], m["user_text"]) for m in result.metrics
    ]
    first, second = result.metrics
    assert first["failed"] and "HTTP 500" in first["error"] and "cascade.llm.base_url" in first["error"]
    assert first["error"].startswith("llm:")
    assert not assistant_active(result, first["user_end"], second["user_start"])
    assert not second["failed"] and second["spoken_text"] == server.answer
    assert assistant_active(result, second["first_audio_stream"], second["first_audio_stream"] + 1.0)
    # the failed turn left no trace in the history; the next one was asked without it
    assert server.requests[-1]["messages"][1:] == [{"role": "user", "content": second["user_text"]}]


def test_realtime_mode_answers_without_blocking_steps(make_system: Any, server: ChatServer) -> None:
    system = make_system(llm=OpenAIChat(base_url=f"{server.url}/v1"), realtime=True)
    audio, _ = script(0.3, "What is the capital of France?", 3.0)
    result = converse(system, audio, realtime=True, progress=False)
    (m,) = result.metrics
    assert not m["failed"] and m["realtime"]
    times = [m[k] for k in (*STAGES, "first_audio_out")]
    assert all(t is not None for t in times) and times == sorted(times), m
    # In real time the answer lands when it is ready: after STT + LLM + TTS, not one frame after the VAD.
    assert m["first_audio_stream"] - m["user_end"] >= m["stages"]["stt"]
    assert m["stages"]["voice_to_voice"] > 0
