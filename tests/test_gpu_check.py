"""The GPU check (scripts/gpu_check.sh) cannot rot: its dry run executes every step on CPU at toy sizes, and
the MFU arithmetic it reports is checked on a matmul whose FLOPs are known."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from e2e_voice.perf import (
    lm_train_flops,
    matmul_flops,
    matmul_parameters,
    max_sustained,
    mfu,
    peak_bf16_flops,
    tick_row,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from gpu_check_steps import cuda_test_files, pytest_counts  # noqa: E402
from gpu_check_train import steady_frames_per_s  # noqa: E402


def test_mfu_of_a_known_matmul() -> None:
    m, k, n = 64, 128, 32
    assert matmul_flops(m, k, n) == 2 * m * k * n
    a, b = torch.randn(m, k), torch.randn(k, n)
    assert torch.allclose(a @ b, torch.einsum("mk,kn->mn", a, b), atol=1e-4)  # the product counted
    # A fake timing: 1000 such products in 2 ms on a card of 1 TFLOP/s peak.
    flops = 1000 * matmul_flops(m, k, n)
    assert mfu(flops, 2e-3, 1e12) == pytest.approx(flops / 2e-3 / 1e12)
    assert mfu(flops, 2e-3, 1e12) == pytest.approx(0.262144)
    with pytest.raises(ValueError):
        mfu(flops, 0.0, 1e12)


def test_peaks_by_card_name() -> None:
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12  # SXM
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA H200") == 989e12
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16_flops("cpu") is None


def test_lm_flops_leave_embeddings_out() -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(100, 8), torch.nn.Linear(8, 4))
    assert matmul_parameters(model) == 8 * 4 + 4
    assert lm_train_flops(36, 10) == 6 * 36 * 10


def test_tick_rows_and_steady_throughput() -> None:
    row = tick_row([0.05] * 7 + [0.2] * 3)
    assert row["tick_ms_p50"] == pytest.approx(50) and not row["sustained"]  # p90 over 100 ms
    assert max_sustained([{"batch": 4, "sustained": True}, {"batch": 8, "sustained": False}]) == 4
    # 100 frames a step, cumulative rates logged: 20 s to step 10 (warm-up), 40 s to step 30.
    rows = [{"step": 10, "train/frames_per_s": 1000 / 20}, {"step": 30, "train/frames_per_s": 3000 / 40}]
    assert steady_frames_per_s(rows, 100) == pytest.approx(100)  # 2000 frames in the last 20 s


def test_finds_the_cuda_tests() -> None:
    files = cuda_test_files()
    assert "tests/test_lm_generate.py" in files and "tests/test_codec_train.py" in files
    assert pytest_counts("== 2 skipped, 53 deselected in 4.1s ==") == {"skipped": 2, "deselected": 53}


@pytest.mark.slow
def test_dry_run_executes_every_step(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--dry-run", "--peak-tflops", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert set(steps) == {"cuda_tests", "engine_tiny", "engine_moshiko", "train_lm", "train_codec"}
    assert all(s["status"] == "ok" for s in steps.values()), steps
    assert steps["cuda_tests"]["counts"].get("skipped", 0) >= 2  # no CUDA here: they skip, none fails
    for name in ("engine_tiny", "engine_moshiko"):
        rows = steps[name]["rows"]
        assert {(r["graphs"], r["batch"]) for r in rows} == {(g, b) for g in (True, False) for b in (1, 2)}
        assert all(r["tick_ms_p50"] > 0 for r in rows)
    for name in ("train_lm", "train_codec"):
        s = steps[name]
        assert s["ended"] == "finished" and s["steps"] == 4
        assert s["frames_per_s"] > 0 and s["tokens_per_s"] > s["frames_per_s"]
        assert s["mfu"] == pytest.approx(s["model_tflops_per_s"] / 1.0)  # against the 1 TFLOP/s given
    md = (tmp_path / "results.md").read_text()
    assert "## train_lm: ok" in md and "| on | 2 |" in md
    assert "gpu_check (dry run" in proc.stdout
    assert time.monotonic() - t0 < 240
