"""What every benchmark and timed evaluation records about the machine it ran on, and how busy it was.

A speed number means little without its context: the CPU, the threads, the torch build, and whether
other jobs were taking CPU time while it was measured (another job made `bench_engine.py`'s
24-conversation tick 90.5 ms instead of 74.4 ms). Every `benchmarks/bench_*.py`, `e2e-voice bench`
(latencies, real-time factors) and `python -m eval.codec` (RTFs) call :func:`machine_context` once before
they measure, store the dict in their JSON, put :func:`context_line` in their markdown, and so warn the
same way.

Busy is measured from ``/proc/stat`` over one second, not from the load average, which stays high for a
minute after a job ends and so flags an idle machine as busy (and a short job started just before the
measurement as idle).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from e2e_voice.data.digests import cpu_info

BUSY = 0.25  # share of all cores other jobs use, above which they visibly slow a benchmark down


def _stat_sample(path: str = "/proc/stat") -> tuple[int, int]:
    """Total and idle (idle + iowait) jiffies of all cores, from the first line of ``/proc/stat``."""
    with open(path) as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of CPU time spent busy between two ``(total, idle)`` samples; 0.0 when no time passed."""
    total = after[0] - before[0]
    if total <= 0:
        return 0.0
    return 1.0 - (after[1] - before[1]) / total


def cpu_busy(
    seconds: float = 1.0, path: str = "/proc/stat", sleep: Callable[[float], None] | None = None
) -> float:
    """Share of all cores' time spent busy (not idle or waiting on I/O) over ``seconds``; NaN off Linux.

    ``path`` is read before and after ``sleep(seconds)`` (default :func:`time.sleep`); a test passes a
    ``sleep`` that rewrites the file, so that the two samples differ.
    """
    try:
        before = _stat_sample(path)
        (sleep or time.sleep)(seconds)
        after = _stat_sample(path)
    except (OSError, ValueError, IndexError):
        return float("nan")
    return busy_share(before, after)


def cpu_name(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (``/proc/cpuinfo``) with the architecture, e.g. ``AMD EPYC (x86_64)``; the
    architecture alone where the model is not readable. Sessions may land on different machines, and the
    architecture alone does not tell them apart."""
    arch = platform.machine() or platform.processor() or "unknown"
    model = cpu_info(path).get("model name")
    return f"{model} ({arch})" if model else arch


def machine_context(threads: int | None = None, seconds: float = 1.0) -> dict[str, Any]:
    """The machine, the time, and how busy the CPU was just now; warns on stderr when it was busy.

    Args:
        threads: torch threads the benchmark uses (``None``: read from torch, when it is imported).
        seconds: how long to watch the CPU before measuring.

    Returns:
        A JSON-ready dict: ``cpu``, ``cores``, ``torch``, ``threads``, ``utc``, ``cpu_busy_before``
        (share of all cores, NaN off Linux) and ``busy`` (whether that share is above :data:`BUSY`).
    """
    torch_mod = sys.modules.get("torch")
    if threads is None and torch_mod is not None:
        threads = torch_mod.get_num_threads()
    busy = cpu_busy(seconds)
    ctx: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch": getattr(torch_mod, "__version__", None),
        "threads": threads,
        "utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu_busy_before": round(busy, 3),
        "busy": bool(busy > BUSY),  # NaN compares False: unknown is not reported as busy
    }
    if ctx["busy"]:
        print(
            f"warning: other jobs kept the CPU {busy:.0%} busy just before this measurement, so its times"
            " will come out slower than on an idle machine; compare rows of one run, or rerun when idle",
            file=sys.stderr,
        )
    return ctx


def context_line(ctx: dict[str, Any]) -> str:
    """One markdown line with the context :func:`machine_context` recorded."""
    busy = ctx["cpu_busy_before"]
    load = "load unknown" if busy != busy else f"{busy:.0%} busy with other jobs just before"  # NaN
    line = (
        f"Measured {ctx['utc']} on {ctx['cpu']} ({ctx['cores']} cores, torch {ctx['torch']},"
        f" {ctx['threads']} threads); CPU {load}."
    )
    if ctx["busy"]:
        line += " **Busy: the times are slower than on an idle machine; compare rows of this run only.**"
    return line
