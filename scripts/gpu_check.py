#!/usr/bin/env python3
"""The full-duplex GPU loop in one command (issue #46): CUDA tests, engine speed, two trainers' throughput.

    scripts/gpu_check.sh                     # on a GPU machine (installs the carried wheels first)
    python scripts/gpu_check.py --dry-run    # the same steps on CPU at toy sizes, in under a minute

A GPU is lent rarely and briefly (about 15 minutes, on a bare machine), so everything worth measuring on it
is prepared here and runs from one command in at most ten minutes. Each step runs in its own process with
its own time box: a step that hangs, runs out of memory or crashes is killed and reported, and the next
step still runs. Steps (see docs/gpu.md):

- ``cuda_tests``: the tests that skip without CUDA (files under tests/ that skip on
  ``torch.cuda.is_available()``, their tests named ``cuda``), run with pytest;
- ``engine_tiny``, ``engine_moshiko``: the batched engine at the tiny LM's and at the published 7B Moshi's
  shape, random weights, LM in bf16, CUDA graphs on and off: tick p50 / p90 per batch size and the largest
  batch that keeps up with real time (80 ms a tick);
- ``train_lm``, ``train_codec``: ``train-lm +experiment=lm_task_gpu`` and ``train-codec
  +experiment=codec_gpu`` for a fixed wall-clock budget on generated data (random token streams; a
  generated corpus of synthetic voiced audio), reporting throughput and MFU (see e2e_voice/perf.py).

Results: ``results.md``, ``results.json`` and ``steps.log`` in ``--out`` (default ``$OUT`` when set, else
runs/gpu_check/); scratch files (generated data, training runs) go elsewhere when ``$OUT`` is the device
tool's folder, which brings back at most 8 files.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from gpu_check_report import write_report  # noqa: E402
from gpu_check_steps import STEPS, run_child  # noqa: E402

# Seconds per step on a GPU (the sum stays under ten minutes with the interpreter starts) and in a dry run.
BUDGETS = {
    "cuda_tests": (90, 40),
    "engine_tiny": (75, 30),
    "engine_moshiko": (165, 30),
    "train_lm": (105, 40),
    "train_codec": (105, 40),
}


def step_env() -> dict[str, str]:
    """The child's environment: the repo importable without installing it, output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("WANDB_MODE", "disabled")
    env.setdefault("HYDRA_FULL_ERROR", "1")
    return env


def kill_group(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM the step's whole process group (it may run a trainer of its own), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(name: str, budget: float, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run one step in its own process group under ``budget`` seconds; its result, or why there is none."""
    result_file = work / f"{name}.json"
    log_file = work / f"{name}.log"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--work", str(work)]
    cmd += ["--budget", str(budget)] + (["--dry-run"] if args.dry_run else [])
    if args.peak_tflops:
        cmd += ["--peak-tflops", str(args.peak_tflops)]
    t0 = time.monotonic()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=step_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code: int | None = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            code = None
    seconds = time.monotonic() - t0
    result: dict[str, Any] = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if code is None:
        status = "timeout"
    elif code != 0:
        status = "failed"
    else:
        status = result.pop("status", "ok")
    tail = log_file.read_text(errors="replace").splitlines()[-15:] if log_file.is_file() else []
    return {"step": name, "status": status, "seconds": round(seconds, 1), "budget_s": budget, **result} | (
        {"log_tail": tail} if status != "ok" else {}
    )


def default_out() -> Path:
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "runs" / "gpu_check"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, about a minute")
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default $OUT, else runs/gpu_check)"
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (generated data, runs)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step's time box")
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the card's dense bf16 peak, when not in the table"
    )
    parser.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=60.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args.child, args.work, args.budget, args.dry_run, args.peak_tflops)
    out = (args.out or default_out()).resolve()
    work = args.work or (Path("/tmp/gpu_check_work") if os.environ.get("OUT") else out / "work")
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    results = []
    for name in args.steps:
        budget = BUDGETS[name][1 if args.dry_run else 0] * args.scale
        print(f"[gpu_check] {name} (time box {budget:.0f} s) ...", flush=True)
        results.append(run_step(name, budget, args, work))
        r = results[-1]
        print(f"[gpu_check] {name}: {r['status']} in {r['seconds']} s", flush=True)
    logs = [f"===== {n} =====\n" + (work / f"{n}.log").read_text(errors="replace") for n in args.steps]
    (out / "steps.log").write_text("\n".join(logs))
    summary = write_report(out, results, dry_run=args.dry_run, seconds=time.monotonic() - t0)
    print(summary)
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
