"""Fixed-length training windows of two-channel conversations, and a resumable sampler.

A window is ``window_seconds`` of both channels (``[C=2, T]``, zero-padded past the end of a
conversation) plus the words that overlap it, shifted into window time and clipped to it. Windows
start every ``hop_seconds`` inside each conversation; a conversation shorter than one window gives one
padded window.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset, Sampler

from e2e_voice.constants import SAMPLE_RATE
from e2e_voice.data.manifest import DialogueEntry, Word, read_manifest


@dataclass(frozen=True)
class Window:
    """One training window.

    Attributes:
        audio: ``[C=2, T]`` float32 (0 = assistant, 1 = user), ``T = window_seconds * 24000``.
        words: words overlapping the window, times relative to its start, clipped to ``[0, window]``.
        entry_id: the conversation.
        start: window start in the conversation, seconds.
        valid_samples: samples before the zero padding.
    """

    audio: torch.Tensor
    words: tuple[Word, ...]
    entry_id: str
    start: float
    valid_samples: int


class DialogueWindows(Dataset[Window]):
    """Map-style dataset of fixed-length windows over the entries of a manifest.

    Args:
        entries: conversations (see :func:`from_manifest`).
        window_seconds: window length.
        hop_seconds: distance between window starts (default: ``window_seconds``, no overlap).
    """

    def __init__(
        self, entries: list[DialogueEntry], window_seconds: float = 20.0, hop_seconds: float | None = None
    ) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        hop = window_seconds if hop_seconds is None else hop_seconds
        if hop <= 0:
            raise ValueError(f"hop_seconds must be positive, got {hop}")
        if not entries:
            raise ValueError("no conversations: the manifest is empty (or every line was skipped)")
        self.entries = entries
        self.skipped: list[str] = []  # messages of manifest lines skipped by from_manifest(skip_bad=True)
        self.window = round(window_seconds * SAMPLE_RATE)
        self.hop = round(hop * SAMPLE_RATE)
        self.index: list[tuple[int, int]] = []  # (entry, start sample)
        for i, e in enumerate(entries):
            total = round(e.duration * SAMPLE_RATE)
            last = max(0, total - self.window)
            starts = list(range(0, last + 1, self.hop))
            if starts[-1] < last and total > self.window:  # cover the tail with one more window
                starts.append(last)
            self.index += [(i, s) for s in starts]

    @classmethod
    def from_manifest(
        cls,
        path: str | os.PathLike[str],
        window_seconds: float = 20.0,
        hop_seconds: float | None = None,
        *,
        skip_bad: bool = False,
    ) -> DialogueWindows:
        """Windows over a validated manifest (``skip_bad`` skips and counts bad lines)."""
        report = read_manifest(Path(path), skip_bad=skip_bad)
        ds = cls(report.entries, window_seconds, hop_seconds)
        ds.skipped = report.skipped
        return ds

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Window:
        entry_i, start = self.index[i]
        e = self.entries[entry_i]
        data, _ = sf.read(
            str(e.audio), start=start, stop=start + self.window, dtype="float32", always_2d=True
        )
        audio = np.zeros((2, self.window), np.float32)
        audio[:, : data.shape[0]] = data.T
        t0, span = start / SAMPLE_RATE, self.window / SAMPLE_RATE
        words = tuple(
            Word(w.word, round(max(0.0, w.start - t0), 3), round(min(span, w.end - t0), 3), w.speaker)
            for w in e.words
            if w.end > t0 and w.start < t0 + span
        )
        return Window(torch.from_numpy(audio), words, e.id, t0, int(data.shape[0]))


class ResumableSampler(Sampler[int]):
    """Shuffled window indices, epoch after epoch, with exact resume.

    The order of epoch ``k`` is a permutation drawn from ``(seed, k)``; the state is
    ``(seed, epoch, position)``, so ``load_state_dict(state_dict())`` continues with the same next indices.

    Args:
        num_items: dataset length.
        seed: shuffling seed.
        shuffle: False keeps the dataset order.
    """

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        self.num_items, self.seed, self.shuffle = num_items, seed, shuffle
        self.epoch = 0
        self.position = 0

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_items)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_items)

    def __iter__(self) -> Iterator[int]:
        """Endless: yields the rest of the current epoch, then the next epochs."""
        while True:
            order = self._order(self.epoch)
            while self.position < self.num_items:
                i = int(order[self.position])
                self.position += 1
                yield i
            self.epoch += 1
            self.position = 0

    def __len__(self) -> int:
        return self.num_items

    def state_dict(self) -> dict[str, Any]:
        """Where the sampler stands (store it in the training checkpoint)."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "num_items": self.num_items,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; refuses a state of a dataset with another length."""
        if int(state["num_items"]) != self.num_items:
            raise ValueError(
                f"sampler state is for {state['num_items']} windows but this dataset has {self.num_items};"
                " resume with the same manifest and window settings"
            )
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])


def collate_windows(batch: list[Window]) -> dict[str, Any]:
    """Stack windows: ``audio`` ``[B, C=2, T]``, and per-item lists of words, ids and starts."""
    return {
        "audio": torch.stack([w.audio for w in batch]),
        "words": [w.words for w in batch],
        "ids": [w.entry_id for w in batch],
        "starts": [w.start for w in batch],
        "valid_samples": torch.tensor([w.valid_samples for w in batch]),
    }
