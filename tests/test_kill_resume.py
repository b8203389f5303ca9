"""``kill -9`` of a tiny ``train-lm`` run mid-training, then the same command again: it resumes from the
run directory's checkpoint and ends bit for bit where an uninterrupted run does, each step logged once.
(The long version, with kills inside checkpoint writes, train-codec and synth-data, is
``benchmarks/bench_kill_resume.py``.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from e2e_voice.constants import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import bench_kill_resume as bench


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL and /proc")
def test_train_lm_killed_mid_training_resumes_bit_for_bit(tmp_path: Path) -> None:
    streams = bench.make_streams(tmp_path / "corpus")
    args = [*bench.LM_TINY, f"lm_data.streams={streams}", "train.steps=60", "train.save_every=10"]
    row = bench.trainer_case("train-lm", args, "model", "timed", 25, tmp_path)
    assert row["killed"], "the run finished before the kill: make it longer"
    assert row["checkpoint_step"] >= 10 and row["logged_past_checkpoint"] >= 1, row  # replayed steps
    assert row["bit_identical"] and row["same_logged_losses"], row
    assert row["extra_rows"] == 0 and row["tmp_left"] == 0, row
