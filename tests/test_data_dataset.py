"""Training windows over the committed fixture, and exact sampler resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from e2e_voice.data.dataset import DialogueWindows, ResumableSampler, collate_windows
from e2e_voice.data.manifest import read_manifest

FIXTURE = Path(__file__).parent / "fixtures" / "dialogues" / "manifest.jsonl"


@pytest.fixture(scope="module")
def windows() -> DialogueWindows:
    return DialogueWindows.from_manifest(FIXTURE, window_seconds=6.0, hop_seconds=4.0)


def test_windows_cover_every_conversation(windows: DialogueWindows) -> None:
    entries = read_manifest(FIXTURE).entries
    assert {windows.entries[i].id for i, _ in windows.index} == {e.id for e in entries}
    for i, e in enumerate(entries):
        starts = [s for j, s in windows.index if j == i]
        assert starts[0] == 0
        assert starts[-1] + windows.window >= round(e.duration * 24000)  # the tail is covered


def test_window_audio_and_shifted_words(windows: DialogueWindows) -> None:
    entries = {e.id: e for e in read_manifest(FIXTURE).entries}
    for k in range(len(windows)):
        w = windows[k]
        assert w.audio.shape == (2, 6 * 24000) and w.audio.dtype == torch.float32
        e = entries[w.entry_id]
        expected = [x for x in e.words if x.end > w.start and x.start < w.start + 6.0]
        assert [x.word for x in w.words] == [x.word for x in expected]
        for shifted, orig in zip(w.words, expected):
            assert 0.0 <= shifted.start <= shifted.end <= 6.0
            assert shifted.speaker == orig.speaker
            if orig.start >= w.start:
                assert abs(shifted.start - (orig.start - w.start)) < 1e-3
        if w.valid_samples < w.audio.shape[-1]:
            assert torch.count_nonzero(w.audio[:, w.valid_samples :]) == 0


def test_collate_shapes(windows: DialogueWindows) -> None:
    batch = collate_windows([windows[0], windows[1], windows[2]])
    assert batch["audio"].shape == (3, 2, 6 * 24000)  # [B, C, T]
    assert len(batch["words"]) == 3


@pytest.mark.parametrize(
    ("consumed", "shuffle"),
    [
        pytest.param(3, True, id="mid-epoch"),
        pytest.param(0, True, id="start"),
        pytest.param(17, True, id="next-epoch"),
        pytest.param(5, False, id="ordered"),
    ],
)
def test_sampler_resume_gives_same_next_windows(
    windows: DialogueWindows, consumed: int, shuffle: bool
) -> None:
    n = len(windows)
    first = ResumableSampler(n, seed=7, shuffle=shuffle)
    it = iter(first)
    _ = list(itertools.islice(it, consumed))
    state = first.state_dict()
    expected = list(itertools.islice(it, 2 * n))
    resumed = ResumableSampler(n, seed=0, shuffle=shuffle)
    resumed.load_state_dict(state)
    got = list(itertools.islice(iter(resumed), 2 * n))
    assert got == expected
    assert [windows[i].entry_id for i in got[:4]] == [windows[i].entry_id for i in expected[:4]]
    assert sorted(got[n - consumed % n : 2 * n - consumed % n]) == list(range(n))  # next epoch: a permutation


def test_sampler_epochs_differ_and_state_mismatch_is_refused() -> None:
    s = ResumableSampler(10, seed=1)
    two = list(itertools.islice(iter(s), 20))
    assert sorted(two[:10]) == list(range(10)) and two[:10] != two[10:]
    with pytest.raises(ValueError, match="same manifest"):
        ResumableSampler(11).load_state_dict(s.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"window_seconds": 0}, "window_seconds must be positive", id="window"),
        pytest.param({"window_seconds": 5, "hop_seconds": -1}, "hop_seconds must be positive", id="hop"),
    ],
)
def test_bad_window_settings(kwargs: dict[str, float], message: str) -> None:
    entries = read_manifest(FIXTURE).entries
    with pytest.raises(ValueError, match=message):
        DialogueWindows(entries, **kwargs)
