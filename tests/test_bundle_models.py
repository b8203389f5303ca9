"""The offline bundle's real models load and do their job (installed by `make models`)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from e2e_voice.assets.registry import check_model_dir, model_dir, resolve_file
from e2e_voice.assets.specs import MODELS
from e2e_voice.audio.io import resample
from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.stt.whisper import WhisperSTT, word_error_rate
from tests.helpers import espeak_speech

pytestmark = pytest.mark.slow

SENTENCES = [
    "The weather is nice today, so we should go for a walk in the park.",
    "Please remember to turn off the lights when you leave the room.",
]


@pytest.fixture(scope="module")
def whisper() -> WhisperSTT:
    return WhisperSTT("whisper-base")


@pytest.mark.parametrize("name", [n for n, s in MODELS.items() if s.in_bundle])
def test_bundle_intact(name: str) -> None:
    check_model_dir(MODELS[name], model_dir(name), full=True)


def test_whisper_transcribes_espeak(whisper: WhisperSTT) -> None:
    hyps = [whisper.transcribe(espeak_speech(s), SAMPLE_RATE) for s in SENTENCES]
    # espeak-ng is robotic; Whisper base reads it at ~13% WER (shared/ANCHORS.md).
    assert word_error_rate(SENTENCES, hyps) < 0.3, hyps


def test_kokoro_speaks_english(whisper: WhisperSTT) -> None:
    from e2e_voice.tts.kokoro import KokoroTTS

    tts = KokoroTTS(voice="jm_kumo")
    audio = tts.synthesize(SENTENCES[0])
    assert tts.sample_rate == SAMPLE_RATE
    seconds = len(audio) / SAMPLE_RATE
    assert 2.0 < seconds < 8.0, seconds
    assert np.sqrt(np.mean(audio**2)) > 0.01  # not silent
    assert word_error_rate(SENTENCES[0], whisper.transcribe(audio, SAMPLE_RATE)) < 0.15


def test_kokoro_bad_voice() -> None:
    from e2e_voice.tts.kokoro import KokoroTTS

    with pytest.raises(ValueError, match=r"unknown Kokoro voice 'nobody'.*jm_kumo"):
        KokoroTTS(voice="nobody")


def test_smollm2_generates() -> None:
    from e2e_voice.text.llm import ChatLM

    lm = ChatLM(max_new_tokens=24)
    answer = lm.reply("What is the capital of France?")
    assert len(answer.split()) >= 3, answer
    assert lm.reply("What is the capital of France?") == answer  # greedy is deterministic


def test_silero_vad_separates_speech_from_silence() -> None:
    sess = ort.InferenceSession(str(resolve_file("silero-vad")), providers=["CPUExecutionProvider"])

    def max_prob(audio16k: np.ndarray) -> float:
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros((1, 64), np.float32)  # silero v5+ expects 64 samples of left context
        probs = []
        for i in range(0, len(audio16k) - 511, 512):
            chunk = np.concatenate([context, audio16k[None, i : i + 512]], axis=1).astype(np.float32)
            out, state = sess.run(None, {"input": chunk, "state": state, "sr": np.array(16000, np.int64)})
            context = chunk[:, -64:]
            probs.append(float(out.reshape(-1)[0]))
        return max(probs)

    speech = resample(espeak_speech(SENTENCES[1]), SAMPLE_RATE, 16_000)
    silence = np.random.default_rng(0).normal(0, 1e-3, 16_000 * 2).astype(np.float32)
    assert max_prob(speech) > 0.8
    assert max_prob(silence) < 0.2


def test_piper_speaks_english(whisper: WhisperSTT) -> None:
    from e2e_voice.tts.piper import PiperTTS

    tts = PiperTTS()
    audio = tts.synthesize(SENTENCES[1])
    assert tts.sample_rate == 22_050
    assert np.sqrt(np.mean(audio**2)) > 0.01
    assert word_error_rate(SENTENCES[1], whisper.transcribe(audio, tts.sample_rate)) < 0.15


def test_piper_noise_makes_each_reading_differ_and_zero_noise_repeats() -> None:
    """Piper samples prosody in its graph: two readings differ, and repeat with both noises at 0."""
    from e2e_voice.tts.piper import PiperTTS

    text = "The quick brown fox."
    sampled = PiperTTS()
    a, b = sampled.synthesize(text), sampled.synthesize(text)
    assert len(a) != len(b) or np.abs(a - b).max() > 1e-3
    fixed = PiperTTS(noise_scale=0.0, noise_w=0.0)
    np.testing.assert_array_equal(fixed.synthesize(text), fixed.synthesize(text))


def test_piper_seed_repeats_a_reading_across_sessions() -> None:
    """A seeded reading is a function of voice, text and seed: another voice object repeats it exactly."""
    from e2e_voice.tts import engines
    from e2e_voice.tts.piper import PiperTTS

    text = "The quick brown fox."
    first, second, other_threads = PiperTTS(threads=1), PiperTTS(threads=1), PiperTTS(threads=2)
    a = first.synthesize(text, seed=7)
    first.synthesize(text)  # an unseeded call in between does not move the seeded one
    np.testing.assert_array_equal(first.synthesize(text, seed=7), a)
    np.testing.assert_array_equal(second.synthesize(text, seed=7), a)
    # same draws with another thread count; only float rounding differs
    np.testing.assert_allclose(other_threads.synthesize(text, seed=7), a, rtol=0, atol=1e-5)
    b = first.synthesize(text, seed=8)
    assert len(a) != len(b) or np.abs(a - b).max() > 1e-3
    spec = engines.VoiceSpec("piper", "piper-en-us-joe", rate=1.05, noise=0.6)
    np.testing.assert_array_equal(engines.synthesize(spec, text), engines.synthesize(spec, text))
    assert engines.reading_seed(spec, text) != engines.reading_seed(spec, "Another line.")


def test_piper_reads_at_per_call_settings_with_one_voice_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """Speed and noise are graph inputs: one voice object at per-call settings reads exactly as an object
    built with those settings, and the engines registry keeps one object per voice, not per setting."""
    from e2e_voice.tts import engines
    from e2e_voice.tts.piper import PiperTTS

    text = "The quick brown fox."
    shared = PiperTTS(threads=1)
    for length, noise in ((1.0 / 1.1, 0.5), (1.0 / 0.9, 0.8)):
        own = PiperTTS(threads=1, length_scale=length, noise_scale=noise)
        per_call = shared.synthesize(text, seed=3, length_scale=length, noise_scale=noise)
        np.testing.assert_array_equal(per_call, own.synthesize(text, seed=3))
    slow = shared.synthesize(text, seed=3, length_scale=1.5)
    assert len(slow) > 1.3 * len(shared.synthesize(text, seed=3))
    with pytest.raises(ValueError, match="length_scale must be positive"):
        shared.synthesize(text, length_scale=0.0)

    monkeypatch.setattr(engines, "_MODELS", {})
    for rate, noise in ((1.1, 0.5), (0.9, 0.8), (1.0, None)):
        engines.synthesize(engines.VoiceSpec("piper", "piper-en-us-joe", rate=rate, noise=noise), text)
    assert len(engines._MODELS) == 1
