"""Both trainers' resume behaviour: a rerun continues (never silently starts over), a killed run's
replayed steps are not logged twice, a save killed mid-write leaves no temporary file for good, and bad
checkpoints or settings are refused with a message that says what to do."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_codec_train import _cfg as codec_cfg
from tests.test_codec_train import corpus  # noqa: F401  (fixture)
from tests.test_lm_train import make_cfg, streams_file  # noqa: F401  (fixture)
from train.checkpoint import CheckpointError, load_checkpoint, remove_stale_tmp, truncate_metrics
from train.codec import CodecTrainer
from train.lm import CHECKPOINT, train


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped), so no process has it for now."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _steps(metrics: Path) -> list[int]:
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines()]


def _kill_leftovers(run: Path, step: int) -> Path:
    """What a kill -9 leaves in ``run``: rows logged past the checkpoint (one torn) and a save's tmp file."""
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step + 1, "train/loss": 1.0}) + "\n" + '{"step": ')
    tmp = run / f"{CHECKPOINT}.{_dead_pid()}.tmp"
    tmp.write_bytes(b"\0" * 1000)
    return tmp


def test_remove_stale_tmp_and_truncate_metrics(tmp_path: Path) -> None:
    ckpt = tmp_path / CHECKPOINT
    dead = tmp_path / f"{CHECKPOINT}.{_dead_pid()}.tmp"
    live = tmp_path / f"{CHECKPOINT}.1.tmp"  # pid 1 is always alive: a live writer's file stays
    other = tmp_path / "codec.safetensors.tmp"
    for p in (dead, live, other):
        p.write_bytes(b"x")
    assert remove_stale_tmp(ckpt) == [dead]
    assert live.exists() and other.exists() and not dead.exists()

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 2, 3, 4)) + '{"st')
    assert truncate_metrics(metrics, 2) == 3 and _steps(metrics) == [1, 2, 2]
    assert truncate_metrics(metrics, 2) == 0 and truncate_metrics(tmp_path / "none.jsonl", 2) == 0


def test_load_checkpoint_refuses_what_is_not_one(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF" + b"\0" * 100)
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*a\.wav.*start over"):
        load_checkpoint(wav, hint="start over")
    other = tmp_path / "state.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a training checkpoint"):  # CheckpointError is a ValueError
        load_checkpoint(other)


def test_lm_rerun_resumes_a_finished_run_instead_of_overwriting_it(tmp_path, streams_file):  # noqa: F811
    common = ("train.steps=4", "train.save_every=100")
    train(make_cfg(tmp_path, streams_file, *common))
    before = (tmp_path / CHECKPOINT).read_bytes()
    rows = (tmp_path / "metrics.jsonl").read_text()
    # the reported accident: the same run_name again, with a shorter stop, used to start over at step 0
    train(make_cfg(tmp_path, streams_file, *common, "lm_train.stop_after=2"))
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    assert (tmp_path / "metrics.jsonl").read_text() == rows  # nothing logged twice either
    # starting over is explicit
    train(make_cfg(tmp_path, streams_file, *common, "lm_train.stop_after=2", "lm_train.resume=false"))
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["step"] == 2
    assert max(_steps(tmp_path / "metrics.jsonl")) == 2


def test_lm_resume_drops_replayed_rows_and_stale_tmp(tmp_path, streams_file):  # noqa: F811
    common = ("train.steps=4", "train.save_every=100")
    train(make_cfg(tmp_path / "straight", streams_file, *common))
    run = tmp_path / "killed"
    train(make_cfg(run, streams_file, *common, "lm_train.stop_after=2"))
    tmp = _kill_leftovers(run, 2)
    train(make_cfg(run, streams_file, *common, f"lm_train.resume={run}"))
    assert not tmp.exists()
    straight = _steps(tmp_path / "straight" / "metrics.jsonl")
    # the stopped run's own end-of-run validation row at step 2 stays; no step is logged twice otherwise
    assert _steps(run / "metrics.jsonl") == sorted([*straight, 2])


def test_lm_bad_resume_and_steps_are_explained(tmp_path, streams_file):  # noqa: F811
    wav = tmp_path / "in.wav"
    wav.write_bytes(b"RIFF" + b"\0" * 100)
    with pytest.raises(CheckpointError, match=r"lm_train\.resume=false"):
        train(make_cfg(tmp_path / "a", streams_file, f"lm_train.resume={wav}"))
    for bad in ("-5", "0", "1.5"):
        with pytest.raises(ValueError, match=re.escape(f"train.steps={bad}: give a whole number >= 1")):
            train(make_cfg(tmp_path / "b", streams_file, f"train.steps={bad}"))


def test_codec_resume_drops_replayed_rows_and_stale_tmp(corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    overrides = ("loss.weights.distill_cos=0", "train.save_every=2", "train.log_every=1")
    CodecTrainer(codec_cfg(corpus, *overrides), tmp_path).fit(steps=2)
    tmp = _kill_leftovers(tmp_path, 2)
    CodecTrainer(codec_cfg(corpus, *overrides), tmp_path).fit(steps=3)
    assert not tmp.exists()
    assert _steps(tmp_path / "metrics.jsonl") == [1, 2, 3]
    with pytest.raises(ValueError, match=r"train\.steps=-5"):
        CodecTrainer(codec_cfg(corpus, *overrides, "train.steps=-5"), tmp_path / "neg")
