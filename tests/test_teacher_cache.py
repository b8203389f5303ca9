"""Teacher features kept on disk between codec runs: reused only when all they depend on matches."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from e2e_voice.constants import SAMPLE_RATE
from train.checkpoint import save_checkpoint
from train.teachers import TeacherCache, cache_key

WHISPER = {
    "_target_": "train.teachers.WhisperEncoderTeacher",
    "model": "whisper-base",
    "compute_type": "int8",
}


class Ramp:
    """Feature t = the sample at the start of frame t, and its negative: features that follow the audio."""

    dim = 2

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        frames = audio[0, 0, ::480][: audio.shape[-1] // 480]
        return torch.stack([frames, -frames], dim=-1)[None]


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Stand in for the child process (whose teacher is the slow part) and count its runs."""
    runs: list[int] = []

    def fake(
        teacher_config: dict[str, Any], clips: list[torch.Tensor], window_s: float = 20.0
    ) -> TeacherCache:
        runs.append(len(clips))
        return TeacherCache.compute(Ramp(), clips, window_s)

    monkeypatch.setattr(TeacherCache, "compute_in_subprocess", staticmethod(fake))
    return runs


def _clips() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(3 * SAMPLE_RATE, generator=g) * 0.1,
        torch.randn(SAMPLE_RATE + 700, generator=g) * 0.1,
    ]


def _same(a: TeacherCache, b: TeacherCache) -> bool:
    return a.dim == b.dim and all(torch.equal(x, y) for x, y in zip(a.features, b.features, strict=True))


def test_second_run_reads_the_features_the_first_computed(tmp_path: Path, computed: list[int]) -> None:
    clips = _clips()
    first = TeacherCache.load_or_compute(WHISPER, clips, tmp_path)
    assert computed == [2] and len(list(tmp_path.glob("*.pt"))) == 1
    again = TeacherCache.load_or_compute(WHISPER, clips, tmp_path)
    assert computed == [2]  # read, not recomputed
    assert _same(first, again)
    assert [f.shape for f in again.features] == [(150, 2), (51, 2)]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("change", ["one sample", "teacher", "window", "threads"])
def test_anything_the_features_depend_on_gives_another_file(
    tmp_path: Path, computed: list[int], change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clips = _clips()
    TeacherCache.load_or_compute(WHISPER, clips, tmp_path)
    config, window = dict(WHISPER), 20.0
    if change == "one sample":
        clips[1] = clips[1].clone()
        clips[1][123] += 1e-6
    elif change == "teacher":
        config["compute_type"] = "float32"
    elif change == "window":
        window = 10.0
    else:
        monkeypatch.setattr(torch, "get_num_threads", lambda: 7)
    TeacherCache.load_or_compute(config, clips, tmp_path, window_s=window)
    assert computed == [2, 2]
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_machine_and_versions_are_in_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    clips = _clips()
    key = cache_key(WHISPER, clips, 20.0)
    assert {"vendor", "family", "model", "vector_isa"} <= set(key["machine"])
    assert key["versions"]["torch"] and torch.__version__.startswith(key["versions"]["torch"].split("+")[0])
    assert {"ctranslate2", "transformers"} <= set(key["versions"])
    other = dict(key["machine"], vector_isa="avx2" if key["machine"]["vector_isa"] != "avx2" else "avx512")
    monkeypatch.setattr("e2e_voice.data.digests.machine_fingerprint", lambda: other)
    assert cache_key(WHISPER, clips, 20.0)["machine"] != key["machine"]


def test_a_replaced_model_file_gives_another_key(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.bin").write_bytes(b"weights one")
    config = {"_target_": "x.Teacher", "model_path": str(model)}
    clips = _clips()
    before = cache_key(config, clips, 20.0)
    assert before["teacher_files"][0][:2] == ["model.bin", 11]
    (model / ".bundle.json").write_text("{}")  # the bundle's marker, rewritten when checked: not the model
    assert cache_key(config, clips, 20.0)["teacher_files"] == before["teacher_files"]
    (model / "model.bin").write_bytes(b"weights two, longer")
    assert cache_key(config, clips, 20.0)["teacher_files"] != before["teacher_files"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other key", "wrong shapes"])
def test_an_unusable_file_is_recomputed_and_replaced(
    tmp_path: Path, computed: list[int], damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    clips = _clips()
    good = TeacherCache.load_or_compute(WHISPER, clips, tmp_path)
    (path,) = tmp_path.glob("*.pt")
    if damage == "garbage":
        path.write_bytes(b"not a torch file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        stored = torch.load(path, weights_only=True)
        if damage == "other key":
            stored["key"]["clips"] = "0" * 64
        else:
            stored["features"][1] = stored["features"][1][:-1]
        torch.save(stored, path)
    with caplog.at_level(logging.WARNING, logger="train.teachers"):
        redone = TeacherCache.load_or_compute(WHISPER, clips, tmp_path)
    assert "unusable" in caplog.text and "computing the features again" in caplog.text
    assert computed == [2, 2] and _same(good, redone)
    TeacherCache.load_or_compute(WHISPER, clips, tmp_path)
    assert computed == [2, 2]  # the replaced file reads


def test_a_cache_that_cannot_be_written_does_not_stop_the_run(
    tmp_path: Path, computed: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="train.teachers"):
        cache = TeacherCache.load_or_compute(WHISPER, _clips(), blocked)
    assert computed == [2] and len(cache.features) == 2
    assert "not kept" in caplog.text


def test_no_cache_dir_computes_every_time(
    tmp_path: Path, computed: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may appear in the working directory either
    TeacherCache.load_or_compute(WHISPER, _clips(), None)
    TeacherCache.load_or_compute(WHISPER, _clips(), None)
    assert computed == [2, 2] and not list(tmp_path.iterdir())


def test_interrupted_write_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "features.pt", {"features": [torch.ones(2)]})
    real_save = torch.save

    def dies(obj: Any, f: Any) -> None:
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"features": []})
    monkeypatch.setattr(torch, "save", real_save)
    assert [p.name for p in tmp_path.iterdir()] == ["features.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["features"][0], torch.ones(2))


def _other_clips(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2 * SAMPLE_RATE, generator=g) * 0.1]


def _age(path: Path, seconds_ago: int) -> None:
    """Date a file's last use back (mtimes written in one test can share a clock tick)."""
    when = time.time() - seconds_ago
    os.utime(path, (when, when))


def test_the_folder_keeps_to_its_budget_deleting_the_least_recently_used(
    tmp_path: Path, computed: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, c = _other_clips(1), _other_clips(2), _other_clips(3)
    TeacherCache.load_or_compute(WHISPER, a, tmp_path)
    (file_a,) = tmp_path.glob("*.pt")
    size = file_a.stat().st_size
    budget = int(2.5 * size)  # two files fit, not three
    TeacherCache.load_or_compute(WHISPER, b, tmp_path, max_bytes=budget)
    (file_b,) = set(tmp_path.glob("*.pt")) - {file_a}
    _age(file_a, 300)
    _age(file_b, 200)
    TeacherCache.load_or_compute(WHISPER, a, tmp_path, max_bytes=budget)  # a read: a is now the newest use
    assert computed == [1, 1]
    with caplog.at_level(logging.INFO, logger="train.teachers"):
        TeacherCache.load_or_compute(WHISPER, c, tmp_path, max_bytes=budget)
    left = set(tmp_path.glob("*.pt"))
    assert file_a in left and file_b not in left and len(left) == 2
    assert "least recently used" in caplog.text and file_b.name in caplog.text
    TeacherCache.load_or_compute(WHISPER, b, tmp_path, max_bytes=budget)
    assert computed == [1, 1, 1, 1]  # b was gone, so computed again


def test_this_runs_file_stays_even_over_budget(tmp_path: Path, computed: list[int]) -> None:
    TeacherCache.load_or_compute(WHISPER, _other_clips(1), tmp_path)
    TeacherCache.load_or_compute(WHISPER, _other_clips(2), tmp_path, max_bytes=1)
    assert len(list(tmp_path.glob("*.pt"))) == 1  # the other file went, this run's stayed
    TeacherCache.load_or_compute(WHISPER, _other_clips(2), tmp_path, max_bytes=1)
    assert computed == [1, 1]  # and it is read back
    (tmp_path / "notes.txt").write_text("not the cache's")
    TeacherCache.load_or_compute(WHISPER, _other_clips(3), tmp_path, max_bytes=1)
    assert (tmp_path / "notes.txt").exists()  # only the cache's own files are deleted


@pytest.mark.parametrize("budget", [0, -1])
def test_a_budget_that_is_not_positive_is_refused(tmp_path: Path, computed: list[int], budget: int) -> None:
    with pytest.raises(ValueError, match="budget must be positive"):
        TeacherCache.load_or_compute(WHISPER, _clips(), tmp_path, max_bytes=budget)
    assert computed == []


def test_a_hub_snapshot_teacher_names_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """whisper-small resolves from the hub only: the key lists the files of its local snapshot."""
    import huggingface_hub.constants

    monkeypatch.setenv("E2E_VOICE_CACHE", str(tmp_path / "bundle"))  # nothing installed there
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    config = {"_target_": "train.teachers.WhisperEncoderTeacher", "model": "whisper-small"}
    assert cache_key(config, _clips(), 20.0)["teacher_files"] == []  # not downloaded: nothing to describe
    repo = tmp_path / "hub" / "models--Systran--faster-whisper-small"
    commit = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    (repo / "blobs" / "b1").write_bytes(b"x" * 17)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.bin").symlink_to(repo / "blobs" / "b1")
    files = cache_key(config, _clips(), 20.0)["teacher_files"]
    assert [f[:2] for f in files] == [["model.bin", 17]]
    (repo / "blobs" / "b1").write_bytes(b"y" * 20)  # the hub's copy updated in place
    assert cache_key(config, _clips(), 20.0)["teacher_files"] != files


def test_the_trainers_budget_setting_is_checked() -> None:
    from train.codec import _cache_budget

    assert _cache_budget(None) is None
    assert _cache_budget(2.0) == 2_000_000_000 and _cache_budget("0.5") == 500_000_000
    for bad in (0, -1.0, "lots", float("nan")):
        with pytest.raises(ValueError, match="distill_cache_max_gb"):
            _cache_budget(bad)
