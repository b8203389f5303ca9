"""Each cascade stage alone: aggregation, STT (two backends), LLM (three backends), TTS (three engines)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cascade_baseline.aggregate import TextAggregator
from cascade_baseline.tts import EspeakTTS, PhraseTTS
from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.stt.whisper import WhisperSTT, word_error_rate
from e2e_voice.text.streaming import AnthropicChat, LLMBackendError, OpenAIChat, TransformersChat
from tests.cascade_fakes import ChatServer, serve_chat
from tests.helpers import espeak_speech

SENTENCE = "The quick brown fox jumps over the lazy dog."
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def whisper() -> WhisperSTT:
    return WhisperSTT()


@pytest.fixture(scope="module")
def chat_lm() -> TransformersChat:
    return TransformersChat(dtype="bfloat16", max_new_tokens=32)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    yield from serve_chat()


# ---------------------------------------------------------------- aggregation


STREAM = ["Well", ", ", "the capital", " of France", " is Paris", ", a city", " of art.", " It is", " big!"]


@pytest.mark.parametrize(
    "mode, expected",
    [
        pytest.param(
            "sentence",
            ["Well, the capital of France is Paris, a city of art.", "It is big!"],
            id="sentence",
        ),
        pytest.param(
            "phrase",
            ["Well, the capital of France is Paris,", "a city of art.", "It is big!"],
            id="phrase",
        ),
    ],
)
def test_aggregator_cuts(mode: str, expected: list[str]) -> None:
    agg = TextAggregator(mode, min_phrase_chars=16)  # type: ignore[arg-type]
    pieces = [p for token in STREAM for p in agg.push(token)]
    pieces.append(agg.flush())
    assert pieces == expected


@pytest.mark.parametrize("mode", ["sentence", "phrase"])
def test_aggregator_streaming_equals_whole(mode: str) -> None:
    text = "".join(STREAM) + " Done. Numbers like 3.5 stay whole, right? Yes."
    whole = TextAggregator(mode)  # type: ignore[arg-type]
    expected = [*whole.push(text), whole.flush()]
    streamed = TextAggregator(mode)  # type: ignore[arg-type]
    got = [p for ch in text for p in streamed.push(ch)]
    assert [*got, streamed.flush()] == expected
    assert "3.5" in " ".join(expected)


def test_aggregator_causal() -> None:
    """A released piece never depends on text that arrives later."""
    a, b = TextAggregator("phrase"), TextAggregator("phrase")
    first = a.push("Hello there, my good friend. ")
    assert first == b.push("Hello there, my good friend. ")
    a.push("Bye.")
    b.push("Something else entirely")
    assert first == ["Hello there, my good friend."]


def test_aggregator_bad_mode() -> None:
    with pytest.raises(ValueError, match=r"cascade\.aggregation\.mode"):
        TextAggregator("paragraph")  # type: ignore[arg-type]


# ---------------------------------------------------------------- STT


@pytest.mark.slow
def test_faster_whisper_transcribes_piper(whisper: WhisperSTT) -> None:
    """The cascade's STT (Whisper base, int8) on the bundle's Piper voice.

    Piper, not espeak-ng: on an AMD EPYC (2026-12-02) the int8 judge read espeak's robotic reading of this
    sentence as "The quick round fox jump is over the lazy dog." (33 % WER; earlier machines stayed under
    25 %), and Piper's at 0 %. The test is about the STT stage, not about how robotic a voice it survives.
    """
    from e2e_voice.tts import engines

    speech = engines.synthesize(engines.VoiceSpec("piper", "piper-en-us-joe"), SENTENCE)
    heard = whisper.transcribe(speech, SAMPLE_RATE)
    assert word_error_rate(SENTENCE, heard) < 0.25, heard


@pytest.fixture(scope="module")
def tiny_hf_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A same-format transformers Whisper checkpoint with random weights, built offline."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from e2e_voice.assets.registry import resolve
    from e2e_voice.stt.hf_whisper import save_processor

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_whisper")
    config = WhisperConfig(
        vocab_size=51865,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_target_positions=64,
        decoder_start_token_id=50258,
        eos_token_id=50257,
        pad_token_id=50257,
    )
    WhisperForConditionalGeneration(config).save_pretrained(d)
    save_processor(d, resolve("whisper-base") / "tokenizer.json")  # the bundle's HF tokenizer.json
    return d


def test_hf_whisper_backend_runs_on_random_checkpoint(tiny_hf_whisper: Path) -> None:
    from e2e_voice.stt.hf_whisper import HFWhisperSTT

    stt = HFWhisperSTT(model_path=str(tiny_hf_whisper), max_new_tokens=6)
    text = stt.transcribe(espeak_speech("Hello there.", 16_000), 16_000)
    # Random weights: the text is gibberish, but the whole path ran and decoded real vocabulary tokens.
    assert isinstance(text, str) and len(text) > 0
    with pytest.raises(ValueError, match="empty"):
        stt.transcribe(np.zeros(0, np.float32), SAMPLE_RATE)


def test_hf_whisper_missing_processor_says_what_to_do(tmp_path: Path) -> None:
    from e2e_voice.stt.hf_whisper import HFWhisperSTT

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"cascade\.stt\.model_path"):
        HFWhisperSTT(model_path=str(tmp_path))


# ---------------------------------------------------------------- LLM


@pytest.mark.slow
def test_local_lm_streams_an_answer(chat_lm: TransformersChat) -> None:
    pieces = list(chat_lm.stream(QUESTION))
    assert len(pieces) > 3, pieces
    assert "Paris" in "".join(pieces)


@pytest.mark.slow
def test_local_lm_cancel_stops_generation(chat_lm: TransformersChat) -> None:
    cancel = threading.Event()
    pieces = []
    for piece in chat_lm.stream(
        [{"role": "user", "content": "Tell me a long story about a dragon."}], cancel
    ):
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
    assert 3 <= len(pieces) <= 4  # at most one piece already in the streamer's queue


@pytest.mark.slow
def test_local_lm_gate_pauses_generation(chat_lm: TransformersChat) -> None:
    """A cleared gate holds generation (the cascade's first-audio priority); setting it resumes."""
    import queue
    import time

    gate, got = threading.Event(), queue.Queue()  # type: ignore[var-annotated]
    gate.set()

    def consume() -> None:
        for piece in chat_lm.stream([{"role": "user", "content": "Tell me a long story."}], gate=gate):
            got.put(piece)
        got.put(None)

    worker = threading.Thread(target=consume)
    worker.start()
    got.get(timeout=60)  # generation has started
    gate.clear()
    time.sleep(1.0)  # let the token in flight arrive (one forward pass, slower on a loaded CPU)
    while not got.empty():
        got.get_nowait()
    time.sleep(1.0)
    assert got.empty(), "tokens arrived while the gate was closed"
    gate.set()
    assert got.get(timeout=60) is not None
    worker.join(60)


def test_local_lm_missing_model_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(LLMBackendError, match=r"cascade\.llm\.model_path"):
        TransformersChat(model_path=str(tmp_path / "nope.gguf"))


def test_openai_endpoint_streams(server: ChatServer) -> None:
    lm = OpenAIChat(base_url=f"{server.url}/v1", model="m", system_prompt="Be brief.")
    pieces = list(lm.stream(QUESTION))
    assert "".join(pieces) == server.answer and len(pieces) > 5
    sent = server.requests[-1]
    assert sent["stream"] is True
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][-1] == QUESTION[0]


def test_openai_cancel_stops_reading(server: ChatServer) -> None:
    cancel = threading.Event()
    lm = OpenAIChat(base_url=f"{server.url}/v1")
    got = []
    for piece in lm.stream(QUESTION, cancel):
        got.append(piece)
        cancel.set()
    assert len(got) == 1


@pytest.mark.parametrize(
    "plan, timeout, match",
    [
        pytest.param("500", 5.0, r"HTTP 500.*cascade\.llm\.base_url", id="http-error"),
        pytest.param("slow", 0.5, r"cascade\.llm\.timeout_s", id="timeout"),
        pytest.param("hang", 0.5, r"cascade\.llm\.timeout_s", id="stalled-stream"),
    ],
)
def test_openai_failures_name_the_setting(server: ChatServer, plan: str, timeout: float, match: str) -> None:
    server.plan.append(plan)
    lm = OpenAIChat(base_url=f"{server.url}/v1", timeout_s=timeout)
    with pytest.raises(LLMBackendError, match=match):
        list(lm.stream(QUESTION))


def test_openai_unreachable_names_the_setting() -> None:
    lm = OpenAIChat(base_url="http://127.0.0.1:9/v1", timeout_s=2.0)  # port 9: discard, nothing listens
    with pytest.raises(LLMBackendError, match=r"cascade\.llm\.base_url"):
        list(lm.stream(QUESTION))


def test_anthropic_streams(server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    lm = AnthropicChat(base_url=server.url, model="claude-x", system_prompt="Be brief.")
    assert "".join(lm.stream(QUESTION)) == server.answer
    sent, headers = server.requests[-1], server.headers[-1]
    assert sent["system"] == "Be brief." and sent["messages"] == QUESTION and sent["stream"] is True
    assert headers["anthropic-version"] == "2023-06-01"


def test_anthropic_key_errors(server: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(LLMBackendError, match="ANTHROPIC_API_KEY"):
        list(AnthropicChat(base_url=server.url).stream(QUESTION))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "wrong")
    with pytest.raises(LLMBackendError, match="HTTP 401"):
        list(AnthropicChat(base_url=server.url).stream(QUESTION))


# ---------------------------------------------------------------- TTS


def _engine(name: str) -> object:
    if name == "kokoro":
        from e2e_voice.tts.kokoro import KokoroTTS

        return KokoroTTS()
    if name == "piper":
        from e2e_voice.tts.piper import PiperTTS

        return PiperTTS()
    return EspeakTTS()


@pytest.mark.slow
@pytest.mark.parametrize(
    "engine, max_wer",
    [
        pytest.param("kokoro", 0.25, id="kokoro"),
        pytest.param("piper", 0.25, id="piper"),
        pytest.param("espeak", 0.35, id="espeak"),
    ],
)
def test_tts_phrase_is_24k_speech_that_transcribes_back(
    whisper: WhisperSTT, engine: str, max_wer: float
) -> None:
    tts = PhraseTTS(_engine(engine))
    text = "The train leaves from the north station at noon."
    audio = tts.synthesize(text)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.8 < len(audio) / SAMPLE_RATE < 5.0
    assert np.sqrt(np.mean(audio**2)) > 0.01
    heard = whisper.transcribe(audio, SAMPLE_RATE)
    assert word_error_rate(text, heard) < max_wer, heard


def test_phrase_tts_rejects_non_engine() -> None:
    with pytest.raises(TypeError, match=r"cascade\.tts"):
        PhraseTTS(object())
