"""The GPU check's results file: ``results.json`` (everything the steps saved) and ``results.md`` (tables),
and a short summary for the terminal."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def engine_lines(r: dict[str, Any]) -> list[str]:
    lines = [
        f"{r.get('shape')} shape: {_fmt(r.get('lm_params', 0) / 1e6, '.1f')}M LM parameters"
        f" ({r.get('lm_dtype')}), random weights; tick budget {_fmt(r.get('tick_budget_ms'))} ms.",
        "",
        "| CUDA graphs | conversations | tick p50 (ms) | tick p90 (ms) | real time |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in r.get("rows", []):
        graphs = "on" if row["graphs"] else "off"
        if "skipped" in row:
            lines.append(f"| {graphs} | {row['batch']} | skipped: {row['skipped']} | | |")
        else:
            lines.append(
                f"| {graphs} | {row['batch']} | {row['tick_ms_p50']:.1f} | {row['tick_ms_p90']:.1f} |"
                f" {'yes' if row['sustained'] else 'no'} |"
            )
    best = r.get("max_sustained", {})
    on, off = best.get("graphs_on"), best.get("graphs_off")
    lines += ["", f"Conversations in real time: graphs on {on}, off {off}."]
    return lines


def train_lines(r: dict[str, Any]) -> list[str]:
    lines = [
        f"Recipe `{r.get('recipe')}` on {r.get('data')}; batch {r.get('batch_size')};"
        f" {r.get('steps', 'no')} steps, {r.get('ended', 'not run')}.",
        "",
        f"- frames/s: {_fmt(r.get('frames_per_s'))}; tokens/s: {_fmt(r.get('tokens_per_s'))}",
        f"- model TFLOP/s: {_fmt(r.get('model_tflops_per_s'), '.3f')}; MFU:"
        f" {_fmt(None if r.get('mfu') is None else 100 * r['mfu'], '.2f')}%"
        f" of {_fmt(r.get('peak_bf16_tflops'), '.0f')} TFLOP/s",
    ]
    if "audio_s_per_s" in r:
        lines.append(f"- audio seconds per second: {_fmt(r['audio_s_per_s'])}")
    return lines


def step_lines(r: dict[str, Any]) -> list[str]:
    name, status = r["step"], r["status"]
    lines = [f"## {name}: {status} ({r['seconds']} s of {r['budget_s']:.0f})", ""]
    if name == "cuda_tests":
        lines.append(f"`{r.get('command')}`: {r.get('counts')}")
    elif name.startswith("engine_") and r.get("rows") is not None:
        lines += engine_lines(r)
    elif name.startswith("train_"):
        lines += train_lines(r)
    if status != "ok":
        lines += ["", "```", *r.get("log_tail", [])[-10:], "```"]
    return [*lines, ""]


def write_report(out: Path, results: list[dict[str, Any]], *, dry_run: bool, seconds: float) -> str:
    """Write results.json and results.md into ``out``; return the summary printed at the end."""
    device = next((r["device"] for r in results if r.get("device")), "unknown")
    head = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "dry_run": dry_run,
        "device": device,
        "torch": next((r["torch"] for r in results if r.get("torch")), None),
        "host": platform.node(),
        "seconds": round(seconds, 1),
    }
    (out / "results.json").write_text(json.dumps({**head, "steps": results}, indent=2, default=str))
    kind = "dry run (CPU, toy sizes)" if dry_run else "GPU"
    lines = [
        f"# GPU check, {kind}: {device}",
        "",
        f"{head['when']}, torch {head['torch']}, {head['seconds']} s in all.",
        "Method: docs/gpu.md; MFU = model FLOP/s over the card's dense bf16 peak (e2e_voice/perf.py).",
        "",
    ]
    for r in results:
        lines += step_lines(r)
    (out / "results.md").write_text("\n".join(lines))
    summary = [f"gpu_check ({kind}) on {device} in {head['seconds']} s -> {out}/results.md"]
    for r in results:
        extra = ""
        if r["step"].startswith("engine_") and r.get("max_sustained"):
            extra = f" real-time conversations {r['max_sustained']}"
        elif r["step"].startswith("train_") and r.get("frames_per_s") is not None:
            extra = f" {r['frames_per_s']:.0f} frames/s, MFU {_fmt(r.get('mfu'), '.4f')}"
        elif r["step"] == "cuda_tests":
            extra = f" {r.get('counts')}"
        summary.append(f"  {r['step']:<15} {r['status']:<8} {r['seconds']:>6.1f} s{extra}")
    return "\n".join(summary)
