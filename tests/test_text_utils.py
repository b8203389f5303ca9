from __future__ import annotations

import numpy as np
import pytest

from e2e_voice.stt.whisper import normalize_text, word_error_rate, word_hits
from e2e_voice.system import DuplexSystem, SystemOutput
from e2e_voice.text.llm import last_whole_sentences
from e2e_voice.tts.kokoro import espeak_to_kokoro


def test_normalize() -> None:
    assert normalize_text("Hello, World! [music] It's 7 o'clock.") == "hello world it's seven o'clock"


@pytest.mark.parametrize(
    "ref, hyp, wer",
    [
        pytest.param("the cat sat", "the cat sat", 0.0, id="exact"),
        pytest.param("the cat sat", "The cat, sat.", 0.0, id="normalised"),
        pytest.param("the cat sat on the mat", "the cat sat on mat", 1 / 6, id="deletion"),
        pytest.param("a b c d", "a x c d e", 2 / 4, id="sub+ins"),
    ],
)
def test_wer_known_values(ref: str, hyp: str, wer: float) -> None:
    assert word_error_rate(ref, hyp) == pytest.approx(wer)


def test_wer_empty_reference() -> None:
    with pytest.raises(ValueError, match="empty"):
        word_error_rate(["..."], ["x"])


@pytest.mark.parametrize(
    "ref, hyp, hits",
    [
        pytest.param("the cat sat", "The cat, sat.", 3, id="normalised"),
        pytest.param("the cat sat on the mat", "the cat sat on mat", 5, id="deletion"),
        pytest.param("a b c d", "a x c d e", 3, id="sub+ins"),
        pytest.param("hello there", "a b c d e f g h hello there i j", 2, id="hallucination-costs-nothing"),
        pytest.param("hello there", "", 0, id="silence"),
        # Two alignments have WER's minimal 5 edits; the hits are those of the best one (cat sat on mat).
        pytest.param("the cat sat on the mat", "a cat sat on mat x y z", 4, id="ambiguous-alignment"),
    ],
)
def test_word_hits_ignore_insertions(ref: str, hyp: str, hits: int) -> None:
    words = len(ref.split())
    assert word_hits(ref, hyp) == (hits, words)
    # The missed-word rate is WER without the insertions.
    assert 1 - hits / words <= word_error_rate(ref, hyp) + 1e-9
    assert word_hits("...", "x") == (0, 0)


def test_last_whole_sentences() -> None:
    assert last_whole_sentences("One. Two is cut") == "One."
    assert last_whole_sentences("No end at all") == "No end at all"


def test_espeak_to_kokoro_mapping() -> None:
    assert espeak_to_kokoro("nˈa\u200dɪs tədˈe\u200dɪ") == "nˈIs tədˈA"
    assert espeak_to_kokoro("wˈɛðɚɹ ɡˌoʊ wˈɔːk") == "wˈɛðəɹ ɡˌO wˈɔk"


class _Echo(DuplexSystem):
    def reset(self) -> None:
        pass

    def step(self, user_frame: np.ndarray) -> SystemOutput:
        return SystemOutput(audio=self.check_frame(user_frame))


def test_system_frame_check() -> None:
    sys_ = _Echo()
    assert sys_.step(np.zeros(1920, np.float32)).audio.shape == (1920,)
    with pytest.raises(ValueError, match=r"expected 1920 samples per frame .* got 1000: buffer input"):
        sys_.step(np.zeros(1000, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        sys_.step(np.full(1920, np.nan, np.float32))
