"""The steps of scripts/gpu_check.py, each run in a child process of its own (``--child NAME``).

A step writes ``<work>/<name>.json`` as it goes (the engine after every batch size), so a step killed at
its time box still reports what it measured. Heavy imports (torch, moshi, hydra) happen inside the steps:
the parent process stays light and cannot be taken down by a step.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("cuda_tests", "engine_tiny", "engine_moshiko", "train_lm", "train_codec")
GPU_BATCHES = (1, 2, 4, 8, 16, 32, 64)


class Step:
    """The child's context: where to write, how much time is left, GPU or dry run."""

    def __init__(self, name: str, work: Path, budget: float, dry_run: bool, peak_tflops: float | None):
        self.name, self.work, self.dry_run = name, Path(work), dry_run
        self.deadline = time.monotonic() + budget
        self.result: dict[str, Any] = {}
        self.peak_tflops = peak_tflops

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self, **fields: Any) -> None:
        """Merge ``fields`` into the step's result file (written atomically, after every measurement)."""
        self.result.update(fields)
        tmp = self.work / f"{self.name}.json.tmp"
        tmp.write_text(json.dumps(self.result, indent=2, default=str))
        tmp.replace(self.work / f"{self.name}.json")

    def device(self) -> dict[str, Any]:
        """The device the step runs on and its bf16 peak (``--peak-tflops`` wins over the table)."""
        import torch

        from e2e_voice.perf import peak_bf16_flops

        if self.dry_run or not torch.cuda.is_available():
            name, peak = "cpu", None
        else:
            name = torch.cuda.get_device_name()
            peak = peak_bf16_flops(name)
        if self.peak_tflops:
            peak = self.peak_tflops * 1e12
        return {"device": name, "peak_bf16_tflops": peak / 1e12 if peak else None, "torch": torch.__version__}


def run_child(name: str, work: Path, budget: float, dry_run: bool, peak_tflops: float | None) -> int:
    """Entry point of a step's process."""
    step = Step(name, work, budget, dry_run, peak_tflops)
    if name == "cuda_tests":
        cuda_tests(step)
    elif name.startswith("engine_"):
        from gpu_check_engine import engine

        engine(step, name.removeprefix("engine_"))
    elif name == "train_lm":
        from gpu_check_train import train_lm

        train_lm(step)
    elif name == "train_codec":
        from gpu_check_train import train_codec

        train_codec(step)
    return 0 if step.result.get("status", "ok") == "ok" else 1


# --- the CUDA-only tests ---------------------------------------------------------------------------
CUDA_SKIP = re.compile(r"skipif\(\s*not torch\.cuda\.is_available\(\)")


def cuda_test_files(root: Path = ROOT) -> list[str]:
    """Test files holding a test that skips without CUDA (found afresh, so new ones are picked up)."""
    return sorted(
        str(p.relative_to(root))
        for p in (root / "tests").glob("test_*.py")
        if CUDA_SKIP.search(p.read_text())
    )


def pytest_counts(output: str) -> dict[str, int]:
    """``{"passed": 2, "skipped": 1, ...}`` from pytest's last summary line."""
    lines = [ln for ln in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", ln)]
    if not lines:
        return {}
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", lines[-1])}


def cuda_tests(step: Step) -> None:
    """pytest over the CUDA-skipping tests (``-k cuda`` inside their files); on CPU they all skip."""
    files = cuda_test_files()
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "cuda", *files]
    step.save(files=files, command=" ".join(cmd[1:]), **step.device())
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(step.left() - 5, 1))
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        output, code = str(e.stdout or "") + "\n(pytest ran out of its time box)", -1
    print(output)
    counts = pytest_counts(output)
    # 5: nothing selected; on CPU every selected test skips, which is the dry run's success.
    ok = code == 0 and not counts.get("failed") and not counts.get("errors") and not counts.get("error")
    step.save(counts=counts, returncode=code, status="ok" if ok else "failed")
