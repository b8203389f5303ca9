"""The demo's last part: the e2e model and the cascade answer held-out spoken task questions, side by side.

A few questions of the closed-domain task (``e2e_voice/data/task.py``, issue #41) are drawn from its
held-out phrasings, one per category, and spoken on the fly by held-out user voices
(``configs/corpus/task.yaml``, ``task.held_out_users``; only the fast engines, espeak and flite, so the
demo does not wait on a neural TTS). Each system hears every question through ``converse`` paced in real
time, as in a live call; then one Whisper judge transcribes what each said. The table shows, per question
and system: its own text (monologue), what Whisper heard from its audio, whether each answers the question
(``answer_correct``), and the response latency on the real clock (first assistant speech onset after the
question's end, ``eval.metrics.response_latency``).

**One user wav per question**, not one conversation with pauses: each system is ``reset()`` before each
question, so one answer (or one babble) cannot leak into the next question's context, every latency is
measured from a clean start, and a question's audio and answer need no cutting into windows.

Order matters for honest latencies: the e2e system runs first, with no CTranslate2 model in the process
(a live Whisper slows torch on CPU, see ``WhisperSTT``); the cascade is built only after the e2e engine was
freed, with its own (unshared) models so that closing it frees them; the judge is built last.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from e2e_voice.audio.io import save_audio
from e2e_voice.constants import CONFIG_DIR, FRAME_SIZE, SAMPLE_RATE
from e2e_voice.converse import converse
from e2e_voice.data.task import CATEGORIES, TaskItem, answer_correct, task_items
from e2e_voice.tts.engines import VoiceSpec, synthesize

FAST_ENGINES = ("espeak", "flite")
"""TTS engines fast enough to speak the demo's questions on the fly (well under a second a sentence)."""
SILENT = 1e-4  # peak below which an assistant channel is silence (nothing for the judge to hear)


@dataclass(frozen=True)
class TaskQuestion:
    """One question of the demo, with who asks it and the one right answer's key words."""

    category: str
    question: str
    answer: str
    key_words: tuple[str, ...]
    voice: VoiceSpec


@dataclass
class TaskAnswer:
    """What one system did with one question (all measured in this run).

    ``latency`` is seconds from the question's end to the system's first speech onset (stream time), or
    None when it never spoke after the question. ``late_frames`` of ``frames`` steps returned after their
    80 ms deadline: when there are many, the system did not keep up with the real clock and the wall-clock
    wait was longer than the latency says. ``heard`` is None until the judge has listened; ``error`` says
    why a system produced nothing (it failed to build, or the conversation raised).
    """

    system: str
    monologue: str = ""
    heard: str | None = None
    latency: float | None = None
    monologue_correct: bool | None = None
    heard_correct: bool | None = None
    speech_seconds: float = 0.0
    late_frames: int = 0
    frames: int = 0
    run_seconds: float = 0.0
    error: str | None = None
    audio: np.ndarray | None = field(default=None, repr=False)


def held_out_voices(corpus: str | Path | None = None) -> list[VoiceSpec]:
    """The held-out user voices of the task corpus on the fast engines, at their rate's and pitch's middle.

    Raises:
        ValueError: the corpus config lists no held-out voice on a fast engine.
    """
    path = Path(corpus) if corpus else CONFIG_DIR / "corpus" / "task.yaml"
    users = OmegaConf.load(path).task.held_out_users
    voices = []
    for group in users.values():
        if group.engine not in FAST_ENGINES:
            continue
        rate = float(np.mean(group.rate)) if group.get("rate") else 1.0
        pitch = float(np.mean(group.pitch)) if group.get("pitch") else None
        voices += [VoiceSpec(str(group.engine), str(v), rate, pitch) for v in group.voices]
    if not voices:
        raise ValueError(f"{path}: task.held_out_users has no voice on a fast engine ({FAST_ENGINES})")
    return voices


def _held_out_pool(category: str) -> list[TaskItem]:
    # Arithmetic asks only held-out operand pairs; the other categories' items are all askable held out.
    return [i for i in task_items() if i.category == category and (category != "arithmetic" or i.held_out)]


def draw_questions(n: int, seed: int = 0, voices: list[VoiceSpec] | None = None) -> list[TaskQuestion]:
    """``n`` questions in ``n`` different categories (in ``CATEGORIES`` order), each in its held-out
    phrasing and spoken by a held-out voice, the engines taking turns; the same ``seed`` draws the same
    questions and voices.

    Raises:
        ValueError: ``n`` is negative or more than there are categories.
    """
    if not 0 <= n <= len(CATEGORIES):
        raise ValueError(f"demo.task_questions={n}: choose 0 to {len(CATEGORIES)} (one per category)")
    rng = np.random.default_rng(seed)
    voices = voices if voices is not None else held_out_voices()
    engines = list(dict.fromkeys(v.engine for v in voices))  # take turns, so flite's one voice is heard
    out = []
    for i, category in enumerate(CATEGORIES[:n]):
        pool = _held_out_pool(category)
        item = pool[int(rng.integers(len(pool)))]
        (question,) = item.phrasings(held_out=True)
        own = [v for v in voices if v.engine == engines[i % len(engines)]]
        voice = own[int(rng.integers(len(own)))]
        out.append(TaskQuestion(category, question, item.answer, item.key_words, voice))
    return out


def question_audio(q: TaskQuestion, lead_s: float, tail_s: float) -> tuple[np.ndarray, float]:
    """The user's side for one question, ``[T]`` at 24 kHz: ``lead_s`` of silence, the question, ``tail_s``
    of silence for the answer; and where the question's speech ends (measured on the audio, so the TTS's
    own trailing silence does not count as question)."""
    from eval.metrics import speech_segments

    speech = synthesize(q.voice, q.question)
    audio = np.concatenate(
        [
            np.zeros(round(lead_s * SAMPLE_RATE), np.float32),
            speech,
            np.zeros(round(tail_s * SAMPLE_RATE), np.float32),
        ]
    )
    segments = speech_segments(audio, SAMPLE_RATE)
    if not segments:
        raise RuntimeError(f"{q.voice.describe()} produced no audible speech for {q.question!r}")
    return audio, segments[-1][1]


def _build(name: str, seed: int) -> Any:
    """A system as ``eval.bench.run_system`` builds it (``configs/converse.yaml`` with ``system=name``),
    in real-time mode; the cascade with its own models (not the process-wide shared ones) so that closing
    it frees them."""
    from eval.bench import check_system, system_config

    overrides = ["system.share_models=false"] if name == "cascade" else []
    check_system(name, overrides)
    node = system_config(name, overrides)
    extra: dict[str, Any] = {"realtime": True} if "realtime" in node else {}
    if "seed" in node and node.seed is None:
        extra["seed"] = seed
    return instantiate(node, **extra)


def _free(system: Any) -> None:
    """Close ``system`` and let its models go before the next one is built.

    The e2e engine is cached per process (``e2e_voice.engine._ENGINES``) for a server's many slots; the
    demo holds the only slot, so the engine is shut down and dropped from that cache.
    """
    system.close()
    engine = getattr(system, "engine", None)
    if engine is not None:
        from e2e_voice import engine as engine_module

        engine.shutdown()
        for key in [k for k, v in engine_module._ENGINES.items() if v is engine]:
            del engine_module._ENGINES[key]
    gc.collect()


def ask_system(
    name: str, questions: list[TaskQuestion], audios: list[tuple[np.ndarray, float]], cfg: DictConfig
) -> list[TaskAnswer]:
    """Ask ``name`` every question through ``converse(realtime=True)``; latency from its own audio.

    A system that fails to build, or a conversation that raises, gives answers carrying the error (shown
    in the table), never another system's output.
    """
    from eval.metrics import response_latency, speech_seconds, speech_segments
    from eval.task_accuracy import join_text

    try:
        system = _build(name, int(cfg.seed))
    except Exception as exc:  # reported in the table, the other system still runs
        return [TaskAnswer(name, error=f"build failed: {type(exc).__name__}: {exc}") for _ in questions]
    answers = []
    try:
        for user, user_end in audios:
            t0 = time.perf_counter()
            try:
                result = converse(
                    system, user, realtime=True, max_tail_s=float(cfg.demo.task.max_tail_s), progress=False
                )
            except Exception as exc:  # one failed question does not hide the others
                answers.append(TaskAnswer(name, error=f"converse failed: {type(exc).__name__}: {exc}"))
                continue
            assistant = result.audio[0]
            segments = speech_segments(assistant, SAMPLE_RATE)
            text = join_text([e.text for e in result.events if e.kind == "assistant_text"])
            answers.append(
                TaskAnswer(
                    name,
                    monologue=text,
                    latency=response_latency(segments, user_end),
                    speech_seconds=speech_seconds(segments, user_end),
                    late_frames=result.late_frames,
                    frames=assistant.shape[-1] // FRAME_SIZE,
                    run_seconds=time.perf_counter() - t0,
                    audio=assistant,
                )
            )
    finally:
        _free(system)
    for q, a in zip(questions, answers):
        if a.error is None:
            a.monologue_correct = answer_correct(a.monologue, q.key_words)
    return answers


def judge_answers(answers: dict[str, list[TaskAnswer]], questions: list[TaskQuestion], model: str) -> None:
    """Whisper (``model``, the bench judge's float32 setting) transcribes each system's audio, after every
    system ran and was freed (see the module docstring); sets ``heard`` and ``heard_correct``."""
    from eval.codec import JUDGE_COMPUTE_TYPES, judge_factory

    judge = judge_factory(JUDGE_COMPUTE_TYPES[0])(model)
    for per_system in answers.values():
        for q, a in zip(questions, per_system):
            if a.audio is None:
                continue
            a.heard = judge.transcribe(a.audio, SAMPLE_RATE) if np.abs(a.audio).max() > SILENT else ""
            a.heard_correct = answer_correct(a.heard, q.key_words)
    del judge
    gc.collect()


def _yes(v: bool | None) -> str:
    return "-" if v is None else "yes" if v else "no"


def _clip(text: str, width: int | None) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if width is None or len(text) <= width else text[: width - 3] + "..."


def task_table(questions: list[TaskQuestion], answers: dict[str, list[TaskAnswer]], width: int | None) -> str:
    """A markdown table, one row per question and system; ``width`` clips the text cells (None: full)."""
    lines = [
        "| # | asked (voice) | system | said (its text) | heard (Whisper) | right said / heard | latency"
        " | late |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, q in enumerate(questions):
        for name, per_system in answers.items():
            a = per_system[i]
            asked = f"{_clip(q.question, width)} ({q.voice.engine}:{q.voice.voice})"
            if a.error:
                cells = [f"FAILED: {_clip(a.error, width)}", "-", "-", "-", "-"]
            else:
                heard = "(silence)" if a.heard == "" else "(not judged)" if a.heard is None else a.heard
                latency = "no answer" if a.latency is None else f"{a.latency:.2f} s"
                right = f"{_yes(a.monologue_correct)} / {_yes(a.heard_correct)}"
                late = f"{a.late_frames}/{a.frames}"
                cells = [_clip(a.monologue, width) or "(no text)", _clip(heard, width), right, latency, late]
            lines.append(f"| {i + 1} | {asked} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_task(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Ask ``cfg.demo.task_questions`` held-out questions of every ``cfg.demo.task.systems``; write
    ``task.json``, ``task.md`` and the wavs to ``out_dir/task/`` and print the table.

    Returns:
        The JSON written (questions, answers per system, timings of this part).
    """
    t_start = time.perf_counter()
    tc = cfg.demo.task
    questions = draw_questions(int(cfg.demo.task_questions), int(tc.seed), held_out_voices(tc.get("corpus")))
    audios = [question_audio(q, float(tc.lead_s), float(tc.tail_s)) for q in questions]
    task_dir = out_dir / "task"
    task_dir.mkdir(parents=True, exist_ok=True)
    for i, (user, _) in enumerate(audios):
        save_audio(task_dir / f"q{i + 1}_user.wav", user)
    timings: dict[str, float] = {"synthesize_questions": time.perf_counter() - t_start}
    answers: dict[str, list[TaskAnswer]] = {}
    cascade_log = logging.getLogger("cascade_baseline")
    level = cascade_log.level
    cascade_log.setLevel(logging.WARNING)  # its per-turn INFO lines would bury the table
    try:
        for name in tc.systems:  # one at a time: each is freed before the next is built
            t = time.perf_counter()
            answers[str(name)] = ask_system(str(name), questions, audios, cfg)
            timings[f"system {name}"] = time.perf_counter() - t
    finally:
        cascade_log.setLevel(level)
    t = time.perf_counter()
    judge_answers(answers, questions, str(tc.judge))
    timings["judge"] = time.perf_counter() - t
    for name, per_system in answers.items():
        for i, a in enumerate(per_system):
            if a.audio is not None:
                save_audio(task_dir / f"q{i + 1}_{name}.wav", a.audio)
    timings["total"] = time.perf_counter() - t_start
    result = {
        "questions": [
            {**asdict(q), "voice": q.voice.describe(), "user_end": end}
            for q, (_, end) in zip(questions, audios)
        ],
        "answers": {
            n: [{k: v for k, v in asdict(a).items() if k != "audio"} for a in per]
            for n, per in answers.items()
        },
        "seconds": timings,
    }
    (task_dir / "task.json").write_text(json.dumps(result, indent=2))
    (task_dir / "task.md").write_text(_markdown(questions, answers, timings))
    print(f"\nHeld-out task questions, real-time clock ({timings['total']:.1f} s for this part):\n")
    print(task_table(questions, answers, width=40))
    print(f"\nwrote {task_dir}/task.json, task.md and the wavs beside them")
    return result


def _markdown(
    questions: list[TaskQuestion], answers: dict[str, list[TaskAnswer]], t: dict[str, float]
) -> str:
    times = ", ".join(f"{k} {v:.1f} s" for k, v in t.items())
    return (
        "# Held-out task questions (e2e-voice demo)\n\n"
        "Latency: first assistant speech onset after the question's end, on the real clock "
        "(`converse(realtime=True)`). Right: `answer_correct` on the system's own text / on Whisper's "
        "transcript of its audio. Late: 80 ms steps that missed their deadline, of all steps (many: the "
        "system fell behind the real clock).\n\n"
        f"{task_table(questions, answers, width=None)}\n\nTimings: {times}\n"
    )
