"""Bench suites (``configs/suite/``), the e2e system's checkpoint checks, and codec metrics in the bench."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from e2e_voice.constants import CONFIG_DIR, REPO_ROOT
from e2e_voice.engine import open_slot
from eval.bench import CODEC_ROWS, resolve_manifest, run

FIXTURE = REPO_ROOT / "tests/fixtures/dialogues/manifest.jsonl"


def _bench(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("bench", overrides=list(overrides))


def test_suites() -> None:
    small, full = _bench(), _bench("suite=full")
    assert small.suite_name == "small" and full.suite_name == "full"
    for cfg in (small, full):
        assert list(cfg.systems) == ["e2e", "cascade"] and cfg.split == "test" and not cfg.realtime
        assert cfg.manifest == "data/generated/synthetic/test.jsonl"
    assert small.limit and small.limit <= 5 and not small.codec_metrics
    assert small.manifest_fallback == "tests/fixtures/dialogues/manifest.jsonl"
    assert full.limit is None and full.codec_metrics and full.manifest_fallback is None
    assert _bench("limit=1").limit == 1  # the command line wins over the suite
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        e2e = compose("converse", overrides=["system=e2e"]).system
    assert e2e.lm_checkpoint == "checkpoints/lm_tiny"
    assert e2e.codec_checkpoint == "checkpoints/codec_cpu/codec.safetensors"


def test_manifest_fallback(tmp_path: Path) -> None:
    missing = tmp_path / "synthetic" / "test.jsonl"
    assert resolve_manifest(_bench(f"manifest={missing}")) == Path("tests/fixtures/dialogues/manifest.jsonl")
    with pytest.raises(FileNotFoundError, match="e2e-voice synth-data"):
        resolve_manifest(_bench("suite=full", f"manifest={missing}"))
    assert resolve_manifest(_bench(f"manifest={FIXTURE}")) == FIXTURE


def test_bad_judge_compute_type_fails_before_any_system_runs(tmp_path: Path) -> None:
    cfg = _bench(f"manifest={FIXTURE}", "judge_compute_type=int4")
    with pytest.raises(ValueError, match="judge compute type 'int4'"):
        run(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "lm, codec, message",
    [
        pytest.param("missing_lm", "missing.safetensors", "train-lm \\+experiment=lm_tiny_cpu", id="lm"),
        pytest.param("lm_dir", "missing.safetensors", "train-codec \\+experiment=codec_cpu_deep", id="codec"),
    ],
)
def test_missing_e2e_checkpoint_says_how_to_get_it(tmp_path: Path, lm: str, codec: str, message: str) -> None:
    (tmp_path / "lm_dir").mkdir()
    lm_path, codec_path = tmp_path / lm, tmp_path / codec
    overrides = (
        f"system_overrides.e2e=['system.lm_checkpoint={lm_path}','system.codec_checkpoint={codec_path}']"
    )
    cfg = _bench(f"manifest={FIXTURE}", overrides)
    # Checked before any system runs (the cascade comes second and would take minutes first).
    with pytest.raises(FileNotFoundError, match=message):
        run(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match=message):
        open_slot(str(lm_path), str(codec_path))


@pytest.mark.slow
def test_codec_metrics_in_bench(tmp_path: Path) -> None:
    cfg = _bench(
        f"manifest={FIXTURE}",
        "limit=1",
        "systems=[loopback]",
        "codec_metrics=true",
        "codec_eval.config=tiny",  # random weights: the numbers are bad, the wiring is what is tested
        "codec_eval.plots=1",
    )
    results = run(cfg, tmp_path)
    codec = results["codec"]
    assert codec["source"] == "configs/codec/tiny (random weights)"
    assert set(codec["channels"]) == {"user", "assistant"}
    for channel, summary in codec["channels"].items():
        assert summary["clips"] == 1 and summary["codec"]["bitrate_bps"] == pytest.approx(4 * 8 * 12.5)
        for _, key, _ in CODEC_ROWS:
            assert summary["mean"][key] is not None, (channel, key)
        assert (tmp_path / f"codec_{channel}" / "codec_metrics.md").is_file()
        assert (tmp_path / f"codec_{channel}" / "spectrogram_00.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["codec"]["channels"]["user"]["mean"]["si_sdr"] == codec["channels"]["user"]["mean"]["si_sdr"]
    report = (tmp_path / "report.md").read_text()
    assert "## Codec: `configs/codec/tiny (random weights)`" in report
    assert (
        "| bitrate (kbps) | 0.40 | 0.40 |" in report
        and "| SI-SDR (dB) |" in report
        and "| WER resynthesis |" in report
        and "0.40 kbps" in report
    )


def test_codec_metrics_build_one_judge_after_every_channel_is_coded(tmp_path: Path) -> None:
    """The bench's codec metrics time the codec on every channel first, then build the judge once (a live
    CTranslate2 model slows torch, and loading Whisper per channel repeated the cost); the caller gets the
    judge back to reuse."""
    import numpy as np

    from e2e_voice.data.manifest import read_manifest
    from eval.bench import codec_metrics
    from tests.helpers import logging_codec

    events: list[str] = []
    codec = logging_codec(events)

    class Judge:
        def __init__(self) -> None:
            events.append("judge")

        def transcribe(self, audio: np.ndarray, sr: int) -> str:
            return "heard"

    entries = read_manifest(FIXTURE).entries[:2]
    results, judge = codec_metrics(codec, entries, ["user", "assistant"], Judge, tmp_path, plots=0)
    assert events == ["encode"] * 4 + ["judge"]
    assert isinstance(judge, Judge) and set(results) == {"user", "assistant"}
    assert all(r["clips"] == 2 and r["mean"]["wer_vs_original_transcript"] == 0.0 for r in results.values())
    assert codec_metrics(codec, entries[:1], ["user"], None, tmp_path, plots=0)[1] is None
