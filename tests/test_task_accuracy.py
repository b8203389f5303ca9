"""Answer accuracy on the closed-domain task (eval/task_accuracy.py) and its wiring into the bench.

The hand-made conversation below has a known answer for every exchange:

    user   0.5-2.0  "What is seven plus five?"          qa 0: key "is twelve"
    user   3.0-3.4  "mm-hm" (a backchannel into the answer: must not end qa 0's window)
    user   6.0-7.5  "What is the capital of France?"    qa 1: interrupted (skipped)
    user   8.5-10.0 "What is the opposite of hot?"      qa 2: key "is cold"
    user  14.0-15.0 "What comes after Monday?"          qa 3: key "is Tuesday" (last: window to the end)

so the windows are 2.0-6.0, 10.0-14.0 and 15.0-end of the system's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.converse import ConversationEvent
from e2e_voice.data.manifest import ASSISTANT, QA, USER, DialogueEntry, Event, Turn
from eval.task_accuracy import (
    answer_windows,
    cut,
    interrupted_count,
    join_text,
    score_exchanges,
    summarize_task,
    task_report,
    text_between,
)

DURATION = 20.0


def _entry(qa: tuple[QA, ...] | None = None) -> DialogueEntry:
    turns = (
        Turn(USER, 0.5, 2.0, "What is seven plus five?"),
        Turn(ASSISTANT, 2.2, 4.5, "Seven plus five is twelve."),
        Turn(USER, 3.0, 3.4, "mm-hm"),
        Turn(USER, 6.0, 7.5, "What is the capital of France?"),
        Turn(USER, 8.5, 10.0, "What is the opposite of hot?"),
        Turn(USER, 14.0, 15.0, "What comes after Monday?"),
    )
    if qa is None:
        qa = (
            QA(
                "arithmetic",
                "What is seven plus five?",
                "Seven plus five is twelve.",
                ("is twelve",),
                2.0,
                2.2,
            ),
            QA("capitals", "What is the capital of France?", "The capital...", ("is Paris",), 7.5, 7.7, True),
            QA("opposites", "What is the opposite of hot?", "The opposite...", ("is cold",), 10.0, 10.2),
            QA("sequence", "What comes after Monday?", "The day after...", ("is Tuesday",), 15.0, 15.2),
        )
    return DialogueEntry(
        id="hand",
        audio=Path("unused.flac"),
        duration=DURATION,
        words=(),
        turns=tuple(sorted(turns, key=lambda t: t.start)),
        events=(Event("backchannel", 3.0, 3.4, {"text": "mm-hm"}),),
        qa=qa,
    )


def _text(time: float, text: str) -> ConversationEvent:
    return ConversationEvent(time, "assistant_text", text)


EVENTS = [
    _text(2.3, "Seven plus five is"),
    _text(3.5, "12."),  # after the backchannel, still qa 0's answer; a numeral
    _text(6.5, "The capital of France is Paris."),  # the interrupted exchange: not scored
    _text(10.5, "The opposite of hot is warm."),  # wrong
    _text(14.5, "I mean, it is cold."),  # right, but after the next question started: not qa 2's
    ConversationEvent(15.5, "user_text", "is Tuesday"),  # the user's words never count
    _text(15.5, "The day after Monday is Tuesday."),
]


def _tone(amplitude: float, seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _assistant() -> np.ndarray:
    """Speech (tones) in qa 0's window at 0.1 and in qa 2's at 0.2; silence in qa 3's; 2 s of tail."""
    audio = np.zeros(round((DURATION + 2.0) * SAMPLE_RATE), np.float32)
    for start, amp in ((2.5, 0.1), (10.5, 0.2)):
        a = round(start * SAMPLE_RATE)
        audio[a : a + SAMPLE_RATE] = _tone(amp, 1.0)
    return audio


HEARD = {0.1: "Seven plus five is twelve.", 0.2: "The opposite of hot is cold."}


class FakeJudge:
    """Reads the tone's amplitude as a transcript (``HEARD``); records each clip's length (seconds)."""

    def __init__(self) -> None:
        self.clips: list[float] = []

    def __call__(self, clip: np.ndarray) -> str:
        self.clips.append(len(clip) / SAMPLE_RATE)
        return HEARD[round(float(np.abs(clip).max()), 1)]

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        assert sample_rate == SAMPLE_RATE
        if len(audio) > 10 * SAMPLE_RATE:  # the whole channel (the bench's WER), not a window
            return "whole"
        return self(audio)


def test_windows_skip_interruptions_and_backchannels() -> None:
    windows = answer_windows(_entry())
    assert [(w.index, w.start, w.end) for w in windows] == [(0, 2.0, 6.0), (2, 10.0, 14.0), (3, 15.0, None)]
    assert [w.key_words for w in windows] == [("is twelve",), ("is cold",), ("is Tuesday",)]
    assert interrupted_count([_entry(), _entry(qa=())]) == 1


def test_scores_on_hand_made_output() -> None:
    judge = FakeJudge()
    scores = score_exchanges(_entry(), EVENTS, _assistant(), SAMPLE_RATE, judge)
    assert [s.index for s in scores] == [0, 2, 3]
    assert [s.said for s in scores] == [
        "Seven plus five is 12.",
        "The opposite of hot is warm.",
        "The day after Monday is Tuesday.",
    ]
    assert [s.said_correct for s in scores] == [True, False, True]
    # qa 3's window is silent: the judge is not asked, nothing is heard.
    assert [s.heard for s in scores] == ["Seven plus five is twelve.", "The opposite of hot is cold.", ""]
    assert [s.heard_correct for s in scores] == [True, True, False]
    assert judge.clips == pytest.approx([4.0, 4.0])  # each window's audio, cut to the next question
    assert scores[-1].end == pytest.approx(DURATION + 2.0)  # the last window runs to the output's end

    summary = summarize_task([scores, []], skipped=1)
    assert summary is not None
    assert summary["exchanges"] == 3 and summary["interrupted_skipped"] == 1
    assert summary["monologue_accuracy"] == pytest.approx(2 / 3)
    assert summary["heard_accuracy"] == pytest.approx(2 / 3)
    cats = summary["categories"]
    assert set(cats) == {"arithmetic", "opposites", "sequence"}
    assert (cats["opposites"]["monologue_accuracy"], cats["opposites"]["heard_accuracy"]) == (0.0, 1.0)
    assert (cats["sequence"]["monologue_accuracy"], cats["sequence"]["heard_accuracy"]) == (1.0, 0.0)
    assert cats["arithmetic"]["exchanges"] == 1

    lines = task_report({"sys": {"task": summary}, "other": {"task": None}})
    assert "| correct, monologue: all | 66.7% (n=3) | - |" in lines
    assert "| correct, heard: opposites | 100.0% (n=1) | - |" in lines


def test_text_joins_subword_pieces_and_phrases() -> None:
    # The e2e engine's pieces carry their own spaces; the cascade's phrases do not.
    assert join_text([" The", " cap", "it", "al", " is", " Par", "is", "."]) == "The capital is Paris."
    assert join_text(["Seven plus five is twelve.", "Anything else?"]) == (
        "Seven plus five is twelve. Anything else?"
    )
    pieces = [_text(2.1, " Se"), _text(2.2, "ven"), _text(2.3, " is"), _text(5.0, "tw"), _text(5.1, "elve")]
    # The convention is the stream's: a window holding only continuation pieces is still glued.
    assert text_between(pieces, 4.0, 6.0) == "twelve"
    assert text_between(pieces, 2.0, 6.0) == "Seven istwelve"
    assert text_between(pieces, 2.25, 2.3) == ""  # end is exclusive


def test_no_qa_no_task_numbers() -> None:
    entry = _entry(qa=())
    assert score_exchanges(entry, EVENTS, _assistant(), SAMPLE_RATE, FakeJudge()) == []
    assert summarize_task([[], []]) is None
    assert task_report({"a": {"task": None}, "b": {}}) == []


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        cut(np.zeros(100, np.float32), SAMPLE_RATE, 2.0, 1.0)
    with pytest.raises(ValueError, match=r"mono speech \[T\]"):
        score_exchanges(_entry(), EVENTS, np.zeros((2, 100), np.float32), SAMPLE_RATE, FakeJudge())
    assert cut(np.ones(SAMPLE_RATE, np.float32), SAMPLE_RATE, 5.0, 6.0).size == 0  # past the end: empty


def test_bench_wiring(tmp_path: Path) -> None:
    """``judge_outputs`` scores the task per conversation, ``summarize``/``report`` show it, results.json
    holds each exchange; a conversation without qa adds nothing."""
    from eval.bench import SystemOutput, _jsonable, judge_outputs, report, summarize

    judge = FakeJudge()
    outputs = [
        SystemOutput(_entry(), _assistant(), "x", 1.0, {}, EVENTS),
        SystemOutput(_entry(qa=()), _assistant(), "x", 1.0, {}, EVENTS),
    ]
    scores = judge_outputs(outputs, judge)  # type: ignore[arg-type]
    assert [len(s.task) for s in scores] == [3, 0]
    summary = {"sys": summarize(scores, interrupted_count([o.entry for o in outputs]))}
    task = summary["sys"]["task"]
    assert task["exchanges"] == 3 and task["monologue_accuracy"] == pytest.approx(2 / 3)
    meta = {"manifest": "m", "conversations": 2, "clock": "offline clock", "judge": "j", "machine": "m"}
    text = report(summary, meta)
    assert "## Task answers" in text and "| correct, heard: all | 66.7% (n=3) |" in text
    exchanges = json.loads(json.dumps([s.__dict__ for s in scores], default=_jsonable))[0]["task"]
    assert exchanges[0]["said"] == "Seven plus five is 12." and exchanges[0]["said_correct"] is True

    plain = {"sys": summarize(scores[1:])}
    assert plain["sys"]["task"] is None and "Task answers" not in report(plain, meta)


def _speech_at(text: str, start: float) -> np.ndarray:
    from tests.helpers import espeak_speech

    speech = espeak_speech(text)
    audio = np.zeros(round(start * SAMPLE_RATE) + len(speech) + SAMPLE_RATE // 2, np.float32)
    audio[round(start * SAMPLE_RATE) :][: len(speech)] = speech
    return audio


@pytest.mark.slow
def test_real_judge_hears_right_and_wrong_answers() -> None:
    """espeak-ng says a right and a wrong answer; the bench's judge (Whisper base, float32) transcribes
    the window and the key words decide."""
    from eval.codec import judge_factory

    judge = judge_factory("float32")("whisper-base")
    qa = (
        QA("arithmetic", "What is seven plus five?", "Seven plus five is twelve.", ("is twelve",), 1.0, 1.2),
    )
    entry = DialogueEntry("speech", Path("unused.flac"), 4.0, (), (Turn(USER, 0.0, 1.0, "q"),), qa=qa)
    results = {}
    for text in ("Seven plus five is twelve.", "Seven plus five is eleven."):
        audio = _speech_at(text, 1.3)
        [score] = score_exchanges(entry, [], audio, SAMPLE_RATE, lambda c: judge.transcribe(c, SAMPLE_RATE))
        results[text] = score
    right, wrong = results.values()
    assert right.heard_correct, right.heard
    assert not wrong.heard_correct and "eleven" in wrong.heard.lower().replace("11", "eleven"), wrong.heard
    assert not right.said_correct  # no text events: the monologue said nothing


@pytest.mark.parametrize("suite, corpus", [("task", "task"), ("task_seen", "task_seen")])
def test_task_suites_need_their_corpus(tmp_path: Path, suite: str, corpus: str) -> None:
    from hydra import compose, initialize_config_dir

    from e2e_voice.constants import CONFIG_DIR
    from eval.bench import resolve_manifest

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("bench", overrides=[f"suite={suite}"])
        missing = compose("bench", overrides=[f"suite={suite}", f"manifest={tmp_path / 'none.jsonl'}"])
    assert cfg.suite_name == suite and cfg.manifest == f"data/generated/{corpus}/test.jsonl"
    assert list(cfg.systems) == ["e2e", "cascade"] and cfg.split == "test" and 0 < cfg.limit <= 30
    assert cfg.manifest_fallback is None and not cfg.codec_metrics
    # No fixture fallback: the error names the command that builds this corpus.
    with pytest.raises(FileNotFoundError, match=f"`e2e-voice synth-data corpus={corpus}`"):
        resolve_manifest(missing)
