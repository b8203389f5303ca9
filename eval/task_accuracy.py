"""Answer accuracy on the closed-domain task (issue #41): did the system give the one right answer?

The task corpus (``e2e-voice synth-data corpus=task``) marks every exchange of a conversation in
``DialogueEntry.qa``: the question, its key words ("is twelve") and when the question ended. Latency and
WER say whether a system talks at the right time and says what it meant; they cannot say whether what it
meant was *right*. This module scores that, twice per exchange:

- **monologue** (``text``): :func:`~e2e_voice.data.task.answer_correct` on the text the system emitted
  (its timed ``assistant_text`` events) inside the exchange's window: did it *mean* the right answer?
- **heard**: the same check on the judge's transcript of the system's audio cut to that window: did the
  right answer *come through* its speech? The gap between the two is the speech's fault, not the
  model's knowledge.

An exchange's window runs from the end of its question (``asked_end``) to the start of the next question,
or to the end of the system's output after the last one. The next question is the first user turn that
starts after ``asked_end`` and is not a backchannel ("mm-hm" said into the answer is not a new question,
so it must not cut the window). Exchanges the user interrupted (``qa.interrupted``) are skipped: the user
barged in on the reference answer, so no whole answer was expected.

Everything here is a pure function of an entry, the system's timed text and its audio (the judge comes in
as a ``transcribe`` callable), so the metric is tested on hand-made inputs with known answers
(``tests/test_task_accuracy.py``). Entries without ``qa`` (every other corpus) give no exchanges and no
task numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from e2e_voice.converse import ConversationEvent
from e2e_voice.data.manifest import USER, DialogueEntry, Turn
from e2e_voice.data.task import answer_correct

BACKCHANNEL_TOLERANCE_S = 0.02
"""A user turn is the backchannel event's when their starts differ by at most this (times are rounded to
1 ms in the manifest, samples to 24 kHz)."""
SILENT_PEAK = 1e-4
"""A window whose audio never exceeds this is silence: the judge is not asked (Whisper invents text on
silence), and the heard answer is empty."""


@dataclass(frozen=True)
class AnswerWindow:
    """Where the answer to one exchange is looked for: ``start`` = the question's end; ``end`` = the next
    question's start, or None after the last question (then: to the end of the system's output)."""

    index: int  # the exchange's position in ``entry.qa``
    category: str
    question: str
    key_words: tuple[str, ...]
    start: float
    end: float | None


@dataclass
class ExchangeScore:
    """One scored exchange: what the system meant and what the judge heard in its window, and whether
    each holds the key words. ``end`` is the window's end actually used (seconds)."""

    index: int
    category: str
    question: str
    key_words: tuple[str, ...]
    start: float
    end: float
    said: str
    heard: str
    said_correct: bool
    heard_correct: bool


def _is_backchannel(turn: Turn, entry: DialogueEntry) -> bool:
    return any(abs(turn.start - e.start) <= BACKCHANNEL_TOLERANCE_S for e in entry.events_of("backchannel"))


def answer_windows(entry: DialogueEntry) -> list[AnswerWindow]:
    """The windows of the exchanges of ``entry.qa`` that were not interrupted, in order.

    A question split by a pause is one exchange (its ``asked_end`` is the end of the second half), so the
    next question is simply the first non-backchannel user turn starting after ``asked_end``.
    """
    user_starts = sorted(t.start for t in entry.turns if t.speaker == USER and not _is_backchannel(t, entry))
    windows = []
    for i, qa in enumerate(entry.qa):
        if qa.interrupted:
            continue
        later = [s for s in user_starts if s > qa.asked_end + 1e-3]
        windows.append(
            AnswerWindow(i, qa.category, qa.question, qa.key_words, qa.asked_end, later[0] if later else None)
        )
    return windows


def join_text(pieces: Sequence[str]) -> str:
    """Join a system's text events into its words.

    Two conventions exist: the e2e engine emits sub-word pieces that carry their own spaces (" Par", "is"
    -> " Paris"), the cascade whole phrases without surrounding spaces ("Seven plus five is twelve.").
    Pieces that carry spaces are concatenated as they are; otherwise joined with one space. A stream uses
    the first convention when any piece starts with whitespace.
    """
    if any(p[:1].isspace() for p in pieces):
        return "".join(pieces).strip()
    return " ".join(p.strip() for p in pieces if p.strip())


def text_between(events: Sequence[ConversationEvent], start: float, end: float) -> str:
    """The ``assistant_text`` of ``events`` with ``start <= time < end``, joined (:func:`join_text`).

    The convention is decided on the whole stream, not on the window (a window may hold one piece).
    """
    texts = [e for e in events if e.kind == "assistant_text"]
    subword = any(e.text[:1].isspace() for e in texts)
    inside = [e.text for e in texts if start <= e.time < end]
    return "".join(inside).strip() if subword else join_text(inside)


def cut(audio: np.ndarray, sample_rate: int, start: float, end: float) -> np.ndarray:
    """``audio[start:end]`` in seconds (clipped to the signal; empty when the window lies past it)."""
    if end < start:
        raise ValueError(f"window ends before it starts: {start:.3f}..{end:.3f} s")
    a = max(0, round(start * sample_rate))
    b = min(len(audio), round(end * sample_rate))
    return audio[a:b] if b > a else audio[:0]


def score_exchanges(
    entry: DialogueEntry,
    events: Sequence[ConversationEvent],
    assistant: np.ndarray,
    sample_rate: int,
    transcribe: Callable[[np.ndarray], str],
) -> list[ExchangeScore]:
    """Score every non-interrupted exchange of ``entry.qa`` (none without qa).

    Args:
        entry: the conversation and its ``qa``.
        events: the system's converse events (``assistant_text`` ones carry stream times in seconds).
        assistant: the system's speech ``[T]`` at ``sample_rate``; may run past ``entry.duration`` (the
            silent tail ``converse`` feeds), which the last window includes.
        transcribe: the judge, mono audio at ``sample_rate`` -> text (not called on silence).
    """
    if assistant.ndim != 1:
        raise ValueError(f"expected the system's mono speech [T], got shape {assistant.shape}")
    out_end = max(entry.duration, len(assistant) / sample_rate)
    scores = []
    for w in answer_windows(entry):
        end = out_end if w.end is None else w.end
        said = text_between(events, w.start, end if w.end is not None else math.inf)
        clip = cut(assistant, sample_rate, w.start, end)
        heard = transcribe(clip).strip() if clip.size and np.abs(clip).max() > SILENT_PEAK else ""
        scores.append(
            ExchangeScore(
                w.index,
                w.category,
                w.question,
                w.key_words,
                w.start,
                end,
                said,
                heard,
                answer_correct(said, w.key_words),
                answer_correct(heard, w.key_words),
            )
        )
    return scores


def _accuracy(xs: list[ExchangeScore]) -> dict[str, Any]:
    n = len(xs)
    return {
        "exchanges": n,
        "monologue_accuracy": sum(x.said_correct for x in xs) / n if n else None,
        "heard_accuracy": sum(x.heard_correct for x in xs) / n if n else None,
    }


def summarize_task(
    conversations: Sequence[Sequence[ExchangeScore]], skipped: int = 0
) -> dict[str, Any] | None:
    """Accuracy over all exchanges and per category (with counts), or None when no conversation had qa.

    ``skipped``: the interrupted exchanges left out, reported beside the counts.
    """
    flat = [x for conv in conversations for x in conv]
    if not flat and not skipped:
        return None
    cats = sorted({x.category for x in flat})
    return {
        **_accuracy(flat),
        "interrupted_skipped": skipped,
        "categories": {c: _accuracy([x for x in flat if x.category == c]) for c in cats},
    }


def interrupted_count(entries: Sequence[DialogueEntry]) -> int:
    """How many exchanges of ``entries`` the user interrupted (not scored)."""
    return sum(q.interrupted for e in entries for q in e.qa)


def _cell(s: dict[str, Any] | None, key: str) -> str:
    if not s or s[key] is None:
        return "-"
    return f"{100 * s[key]:.1f}% (n={s['exchanges']})"


def task_report(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The report's task section (one column per system), or no lines when no system had task numbers."""
    tasks = {name: s.get("task") for name, s in summary.items()}
    if not any(tasks.values()):
        return []
    names = list(tasks)
    skipped = max((t or {}).get("interrupted_skipped", 0) for t in tasks.values())
    lines = [
        "",
        "## Task answers (closed-domain task, issue #41)",
        "",
        'Share of exchanges whose key words (e.g. "is twelve") the system gave between the end of the'
        " question and the start of the next one: in its own text (monologue) and in the judge's transcript"
        f" of its speech (heard). Exchanges the user interrupted are not scored ({skipped} here).",
        "",
        "| metric | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for label, key in (("monologue", "monologue_accuracy"), ("heard", "heard_accuracy")):
        lines.append(f"| correct, {label}: all | " + " | ".join(_cell(t, key) for t in tasks.values()) + " |")
        cats = sorted({c for t in tasks.values() if t for c in t["categories"]})
        for c in cats:
            cells = [_cell((t or {}).get("categories", {}).get(c), key) for t in tasks.values()]
            lines.append(f"| correct, {label}: {c} | " + " | ".join(cells) + " |")
    return lines
