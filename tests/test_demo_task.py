"""The demo's held-out task questions (eval/demo_task.py): the drawing, the table, and one real run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from e2e_voice.audio.io import load_audio
from e2e_voice.constants import CONFIG_DIR, SAMPLE_RATE
from e2e_voice.data.task import CATEGORIES, answer_correct, task_items
from e2e_voice.tts.engines import VoiceSpec
from eval.demo_task import (
    FAST_ENGINES,
    TaskAnswer,
    TaskQuestion,
    draw_questions,
    held_out_voices,
    run_task,
    task_table,
)


def _compose(overrides: list[str]) -> Any:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("demo", overrides=overrides)


def test_draw_questions_held_out_deterministic_distinct() -> None:
    qs = draw_questions(4, seed=0)
    assert qs == draw_questions(4, seed=0)
    assert qs != draw_questions(4, seed=1)
    assert [q.category for q in qs] == list(CATEGORIES[:4])  # one per category, all different
    for q in qs:
        (item,) = [i for i in task_items() if i.answer == q.answer and q.question in i.questions]
        assert item.phrasings(held_out=True) == (q.question,)
        assert q.question not in item.phrasings(held_out=False)
        assert item.category != "arithmetic" or item.held_out  # only held-out operand pairs
        assert q.key_words == item.key_words
    held_out = held_out_voices()
    assert {q.voice for q in qs} <= set(held_out)
    assert {q.voice.engine for q in qs} == {"espeak", "flite"}  # the engines take turns
    training = OmegaConf.load(CONFIG_DIR / "corpus" / "task.yaml").users
    train_voices = {(g.engine, v) for g in training.values() for v in g.voices}
    assert not {(v.engine, v.voice) for v in held_out} & train_voices
    assert {v.engine for v in held_out} <= set(FAST_ENGINES)
    assert draw_questions(0) == []
    with pytest.raises(ValueError, match="task_questions"):
        draw_questions(len(CATEGORIES) + 1)


def test_task_table_reports_failures_and_silence() -> None:
    q = TaskQuestion(
        "capitals", "Which city?", "The capital of X is Y.", ("is Y",), VoiceSpec("flite", "kal16")
    )
    answers = {
        "e2e": [TaskAnswer("e2e", error="build failed: FileNotFoundError: no checkpoint")],
        "cascade": [TaskAnswer("cascade", monologue="", heard="", latency=None, frames=10)],
    }
    table = task_table([q], answers, width=None)
    assert "FAILED: build failed: FileNotFoundError" in table
    assert "(silence)" in table and "no answer" in table and "(no text)" in table


def test_demo_run_calls_task_part(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import eval.demo as demo
    import eval.demo_task as demo_task

    monkeypatch.setattr(demo, "_pipeline", lambda cfg, out, rows: {"question": "q", "answer": "a"})
    monkeypatch.setattr(demo, "_print", lambda *a: None)
    monkeypatch.setattr(demo_task, "run_task", lambda cfg, out: {"n": int(cfg.demo.task_questions)})
    assert demo.run(_compose(["demo.task_questions=2"]), tmp_path)["task"] == {"n": 2}
    assert json.loads((tmp_path / "summary.json").read_text())["task"] == {"n": 2}
    assert "task" not in demo.run(_compose(["demo.task_questions=0"]), tmp_path)


@pytest.mark.slow
def test_task_part_runs_real_systems(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One question to the real e2e model and cascade; every cell comes from this run's measurements."""
    from e2e_voice.stt.whisper import WhisperSTT
    from eval.metrics import response_latency, speech_segments

    heard_by_whisper: list[str] = []
    transcribe = WhisperSTT.transcribe

    def spy(self: WhisperSTT, audio: np.ndarray, sr: int) -> str:
        text = transcribe(self, audio, sr)
        heard_by_whisper.append(text)
        return text

    monkeypatch.setattr(WhisperSTT, "transcribe", spy)
    result = run_task(_compose(["demo.task_questions=1"]), tmp_path)
    (question,) = result["questions"]
    assert question["category"] == "arithmetic" and question["user_end"] > 0.5
    assert set(result["answers"]) == {"e2e", "cascade"}
    for name, (a,) in result["answers"].items():
        assert a["error"] is None, a["error"]
        assert a["frames"] > 0 and 0 <= a["late_frames"] <= a["frames"]
        assert a["monologue_correct"] == answer_correct(a["monologue"], question["key_words"])
        assert isinstance(a["heard"], str) and a["heard_correct"] == answer_correct(
            a["heard"], question["key_words"]
        )
        assistant = load_audio(tmp_path / "task" / f"q1_{name}.wav", SAMPLE_RATE, mono=True)[0]
        if np.abs(assistant).max() > 1e-4:
            assert a["heard"] in heard_by_whisper  # the judge's own transcript
        latency = response_latency(speech_segments(assistant, SAMPLE_RATE), question["user_end"])
        assert (a["latency"] is None) == (latency is None)
        if latency is not None:
            assert a["latency"] == pytest.approx(latency, abs=0.05)
    assert result["answers"]["cascade"][0]["monologue"]  # the cascade always answers something
    table = (tmp_path / "task" / "task.md").read_text()
    assert question["question"] in table and "| e2e |" in table and "| cascade |" in table
    assert json.loads((tmp_path / "task" / "task.json").read_text())["seconds"]["total"] > 0


def test_ask_system_build_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    import eval.demo_task as demo_task

    def fail(name: str, seed: int) -> None:
        raise FileNotFoundError("checkpoints/lm_task missing")

    monkeypatch.setattr(demo_task, "_build", fail)
    qs = draw_questions(2)
    answers = demo_task.ask_system("e2e", qs, [(np.zeros(1920, np.float32), 0.0)] * 2, _compose([]))
    assert [a.error for a in answers] == ["build failed: FileNotFoundError: checkpoints/lm_task missing"] * 2
    assert all(a.audio is None and a.latency is None for a in answers)  # nothing borrowed from elsewhere
