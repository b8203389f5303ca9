"""The README's main job, end to end on the offline bundle (small settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from e2e_voice.audio.opus import opus_roundtrip
from e2e_voice.constants import CONFIG_DIR
from eval.demo import run

pytestmark = pytest.mark.slow


def test_demo_runs(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "demo",
            overrides=[
                "codec=tiny",
                "cascade.llm.max_new_tokens=32",
                "demo.question=What is the capital of France?",
                "demo.task_questions=0",  # the task part has its own test (tests/test_demo_task.py)
            ],
        )
    summary = run(cfg, tmp_path)
    assert "task" not in summary
    steps = {s["step"]: s for s in summary["steps"]}
    assert "Paris" in summary["answer"]
    assert steps["whisper (original)"]["wer"] < 0.25
    assert steps["opus round-trip"]["wer"] < 0.25
    assert summary["mimi_codes_shape_BKT"][:2] == [1, 4]
    assert json.loads((tmp_path / "summary.json").read_text())["answer"] == summary["answer"]
    for name in ("answer.wav", "answer_opus.wav", "answer_mimi.wav"):
        assert (tmp_path / name).stat().st_size > 1000


def test_opus_roundtrip_keeps_length() -> None:
    import numpy as np

    x = (0.3 * np.sin(np.arange(24_000) / 24_000 * 2 * np.pi * 300)).astype(np.float32)
    y = opus_roundtrip(x)
    assert y.shape == x.shape
