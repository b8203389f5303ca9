"""Streaming Silero VAD and the start/stop state machine."""

from __future__ import annotations

import numpy as np
import pytest

from cascade_baseline.vad import CHUNK_S, SileroVAD, VADSegmenter
from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from tests.helpers import espeak_speech


def _silence(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1e-3, int(seconds * SAMPLE_RATE)).astype(np.float32)


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, float, float]:
    """1 s silence, a sentence, 1.5 s silence; returns (audio, speech start s, speech end s)."""
    speech = espeak_speech("Could you tell me what time it is?")
    loud = np.flatnonzero(np.abs(speech) > 0.01)
    speech = speech[loud[0] : loud[-1] + 1]  # espeak pads its wav with silence; trim to the real speech
    audio = np.concatenate([_silence(1.0), speech, _silence(1.5, 1)])
    return audio, 1.0, 1.0 + len(speech) / SAMPLE_RATE


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


@pytest.mark.parametrize(
    "split",
    [
        pytest.param(FRAME_SIZE, id="80ms-frames"),
        pytest.param(777, id="odd-pieces"),
        pytest.param(24_000, id="1s-pieces"),
    ],
)
def test_streaming_equals_whole(vad: SileroVAD, clip: tuple[np.ndarray, float, float], split: int) -> None:
    audio = clip[0]
    vad.reset()
    whole = vad.process(audio)
    vad.reset()
    streamed = np.concatenate([vad.process(audio[i : i + split]) for i in range(0, len(audio), split)])
    n = min(len(whole), len(streamed))
    assert n >= len(audio) / SAMPLE_RATE / CHUNK_S - 2
    np.testing.assert_allclose(streamed[:n], whole[:n], atol=1e-4)


def test_causal(vad: SileroVAD, clip: tuple[np.ndarray, float, float]) -> None:
    """Changing audio after time t does not change any probability of a chunk that ended before t."""
    audio = clip[0]
    cut = int(2.0 * SAMPLE_RATE)
    other = audio.copy()
    other[cut:] = np.random.default_rng(5).normal(0, 0.3, len(audio) - cut)
    vad.reset()
    a = vad.process(audio)
    vad.reset()
    b = vad.process(other)
    safe = int(1.95 / CHUNK_S)  # chunks ending before the cut, minus the resampler's look-ahead
    np.testing.assert_array_equal(a[:safe], b[:safe])
    assert not np.allclose(a[safe + 5 :], b[safe + 5 :])  # the change is visible later


def test_detects_start_and_stop(vad: SileroVAD, clip: tuple[np.ndarray, float, float]) -> None:
    audio, start, end = clip
    vad.reset()
    seg = VADSegmenter(threshold=0.5, min_speech_ms=96, min_silence_ms=400)
    events = []
    for i in range(0, len(audio), FRAME_SIZE):
        events += seg.update(vad.process(audio[i : i + FRAME_SIZE]))
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "stop", events
    assert abs(events[0].time - start) < 0.15, events
    assert abs(events[-1].time - end) < 0.3, events
    assert events[-1].detected - events[-1].time == pytest.approx(0.4, abs=CHUNK_S)
    # espeak pauses between words are shorter than 400 ms: one utterance
    assert kinds == ["start", "stop"], events


def test_silence_never_starts(vad: SileroVAD) -> None:
    vad.reset()
    seg = VADSegmenter()
    assert seg.update(vad.process(_silence(3.0))) == []


@pytest.mark.parametrize(
    "probs, kinds",
    [
        pytest.param([0.9] * 2 + [0.0] * 20, [], id="blip-shorter-than-min-speech"),
        pytest.param([0.9] * 5 + [0.0] * 20, ["start", "stop"], id="speech-then-silence"),
        pytest.param(
            [0.9] * 5 + [0.0] * 3 + [0.9] * 5 + [0.0] * 20, ["start", "stop"], id="short-pause-kept"
        ),
        pytest.param([0.9] * 5 + [0.45] * 30, ["start"], id="between-thresholds-keeps-speaking"),
    ],
)
def test_segmenter_logic(probs: list[float], kinds: list[str]) -> None:
    seg = VADSegmenter(threshold=0.5, min_speech_ms=96, min_silence_ms=200)  # 3 chunks, ~6 chunks
    events = seg.update(np.array(probs))
    assert [e.kind for e in events] == kinds
    if kinds:
        assert events[0].time == 0.0 and events[0].detected == pytest.approx(3 * CHUNK_S)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param({"threshold": 1.5}, r"cascade\.vad\.threshold", id="threshold"),
        pytest.param({"min_silence_ms": -1}, r"cascade\.vad\.min_silence_ms", id="min-silence"),
        pytest.param({"threshold": 0.5, "neg_threshold": 0.7}, r"cascade\.vad\.neg_threshold", id="neg"),
    ],
)
def test_bad_config(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VADSegmenter(**kwargs)  # type: ignore[arg-type]
