"""What ``synth-data corpus=task`` adds to the generator: task plans, held-out voices, and word times
that cost no Whisper pass per conversation.

At 20 hours (about 3,000 conversations) the default alignment, all clips of a conversation aligned
together on every run (about 1.3 s of Whisper per conversation), would take an hour alone. The task
corpus uses ``alignment.method=bank`` instead:

* the **assistant's answers** come from a closed bank (:func:`e2e_voice.data.task.task_items`); each is
  aligned once with Whisper, together with the other answers of its fixed group of
  :data:`BANK_GROUP` (the bank sorted, then cut in groups), and the times are cached. A group never
  depends on which answers a corpus uses, so an answer's times are the same in every corpus and from any
  cache state;
* the **user's words** are spread over the clip's speech in proportion to their letters
  (:func:`spread_times`). The user's words are context, not a target, in the dialogue streams; the ASR
  mode, which does train on them, reads the text two seconds behind the audio.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.data import task
from e2e_voice.data.align import Timed, _spread, speech_bounds, split_words
from e2e_voice.tts.engines import VoiceSpec

BANK_GROUP = 6
"""Answers aligned together in one Whisper window (about 15 s of speech: well inside the 29 s window)."""


@dataclass(frozen=True)
class TaskSettings:
    """The task corpus's own settings (``configs/corpus/task.yaml``).

    Attributes:
        held_out_users: the user voice pools of the valid and test splits; none of their voices may occur
            in the training pools (checked by :class:`~e2e_voice.data.synth.SynthSettings`).
        weights: how often each question category is asked (small talk has its own share).
        small_talk_prob: chance that a conversation opens (and, separately, closes) with small talk.
        held_out_splits: the splits that draw the held-out voices, phrasings and pairs; ``[]`` makes an
            evaluation corpus of training voices and phrasings (``corpus=task_seen``).
    """

    held_out_users: tuple[Any, ...]  # VoicePool (typed loosely: synth imports this module)
    weights: dict[str, float]
    small_talk_prob: float = 0.3
    held_out_splits: tuple[str, ...] = ("valid", "test")

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(task.CATEGORIES)
        if unknown:
            raise ValueError(f"task.weights: unknown categories {sorted(unknown)}; known: {task.CATEGORIES}")
        if any(w < 0 for w in self.weights.values()) or not any(
            w > 0 for c, w in self.weights.items() if c != "small_talk"
        ):
            raise ValueError(f"task.weights must be >= 0 with one question category > 0, got {self.weights}")
        if not 0 <= self.small_talk_prob <= 1:
            raise ValueError(f"task.small_talk_prob must be in [0, 1], got {self.small_talk_prob}")
        if set(self.held_out_splits) - {"train", "valid", "test"}:
            raise ValueError(
                f"task.held_out_splits must name splits (train, valid, test): {self.held_out_splits}"
            )
        if not self.held_out_users:
            raise ValueError(
                "task.held_out_users is empty: the valid and test splits need voices of their own"
            )


@lru_cache(maxsize=1)
def answer_universe() -> tuple[str, ...]:
    """Every answer the task can give, sorted (the order that defines the alignment groups)."""
    return tuple(sorted({item.answer for item in task.task_items()}))


def bank_group(text: str) -> tuple[str, ...]:
    """The fixed group of answers that ``text`` is aligned with.

    Raises:
        ValueError: ``text`` is not an answer of the task (``alignment.method=bank`` is for the task).
    """
    universe = answer_universe()
    try:
        i = universe.index(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not in the task's answer bank: alignment.method=bank aligns the task's answers"
            " only (content.source=task); use alignment.method=whisper for other content"
        ) from None
    start = i - i % BANK_GROUP
    return universe[start : start + BANK_GROUP]


def spread_times(audio: np.ndarray, text: str) -> list[Timed]:
    """Word times of ``text`` spread over the speech in ``audio`` by letter count (no model involved)."""
    words = split_words(text)
    a, b = speech_bounds(audio)
    if b <= a:
        a, b = 0, len(audio)
    return [
        (w, round(s, 3), round(e, 3))
        for w, (s, e) in zip(words, _spread(words, a / SAMPLE_RATE, b / SAMPLE_RATE))
    ]


class BankTimes:
    """Whisper times of the task's answers, aligned a group at a time and cached on disk.

    Args:
        root: cache folder.
        spec: the assistant voice (part of the key).
        tag: the aligner's identity (model, method), part of the key.
        speech: ``text -> 24 kHz audio`` of the assistant (cached TTS).
        aligner: a :class:`~e2e_voice.data.align.WhisperAligner` factory, called on the first miss.
    """

    def __init__(
        self,
        root: Path,
        spec: VoiceSpec,
        tag: tuple[str, ...],
        speech: Callable[[str], np.ndarray],
        aligner: Callable[[], Any],
    ) -> None:
        self.root, self.spec, self.tag = root, spec, tag
        self._speech, self._aligner = speech, aligner
        self._groups: dict[tuple[str, ...], dict[str, list[Timed]]] = {}
        self.aligned_groups = 0

    def _path(self, group: tuple[str, ...]) -> Path:
        blob = json.dumps([asdict(self.spec), list(self.tag), list(group)], sort_keys=True)
        return self.root / f"{hashlib.sha256(blob.encode()).hexdigest()}.json"

    def times(self, text: str) -> list[Timed]:
        """The raw (not offset-corrected) Whisper times of answer ``text``."""
        group = bank_group(text)
        if group not in self._groups:
            path = self._path(group)
            try:
                saved = json.loads(path.read_text("utf-8"))
                self._groups[group] = {
                    t: [(str(w), float(a), float(b)) for w, a, b in saved[t]] for t in group
                }
            except (OSError, ValueError, KeyError):
                aligned = self._aligner().align_many([(self._speech(t), t) for t in group])
                self._groups[group] = dict(zip(group, aligned))
                self.aligned_groups += 1
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(self._groups[group]), "utf-8")
                tmp.replace(path)
        return list(self._groups[group][text])


def plan_task(
    settings: Any, rng: np.random.Generator, split: str, n: int
) -> tuple[Any, tuple[task.TaskExchange, ...]]:
    """The user voice and the exchanges of a task conversation: the held-out splits (valid, test) draw
    held-out voices, the held-out phrasing and held-out operand pairs; train draws the rest."""
    from e2e_voice.data.synth import draw_voice

    ts: TaskSettings = settings.task
    held_out = split in ts.held_out_splits
    voice = draw_voice(ts.held_out_users if held_out else settings.users, rng)
    exchanges = task.draw_exchanges(rng, n, held_out, ts.weights, ts.small_talk_prob)
    return voice, exchanges
