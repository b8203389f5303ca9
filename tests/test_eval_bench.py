"""The benchmark harness end to end on the committed fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from e2e_voice.constants import CONFIG_DIR, REPO_ROOT
from eval.bench import ROWS, run

pytestmark = pytest.mark.slow
FIXTURE = REPO_ROOT / "tests/fixtures/dialogues/manifest.jsonl"


def test_bench_on_the_fixture(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("bench", overrides=[f"manifest={FIXTURE}", "limit=1", "systems=[loopback,cascade]"])
    results = run(cfg, tmp_path)
    summary = results["summary"]
    assert set(summary) == {"loopback", "cascade"}
    for name, s in summary.items():
        for _, key, _ in ROWS:
            if key is not None:
                assert key in s, (name, key)
        assert s["conversations"] == 1 and s["real_time_factor"] > 0
    # The cascade answers each user turn of the fixture; the loopback only echoes.
    assert summary["cascade"]["responses"] >= 1 and summary["cascade"]["latency_p50_s"] is not None
    assert summary["cascade"]["wer"] is not None and summary["cascade"]["prosody"]["f0_mean_st"] is not None
    assert summary["cascade"]["stages_p50_s"].get("stt") is not None  # the cascade's own stage timings
    report = (tmp_path / "report.md").read_text()
    assert "| latency p50 (s) |" in report and "cascade" in report and "loopback" in report
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["conversations"] == 1
    assert (tmp_path / "latency.png").stat().st_size > 1000 and (
        tmp_path / "prosody.png"
    ).stat().st_size > 1000
