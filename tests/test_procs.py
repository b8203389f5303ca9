"""Pool workers die with their parent: a ``kill -9`` of ``synth-data`` used to leave its workers running
(re-parented to PID 1) and writing into ``out_dir``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e_voice.constants import REPO_ROOT

# A parent that starts one spawn-pool worker with synth-data's own initializer, prints the worker's pid,
# and keeps it busy.
PARENT = """
import multiprocessing as mp, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from e2e_voice.data.synth import _init_worker
pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(1,))
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 120)
time.sleep(120)
"""

# A child on the fallback path: the kernel's parent-death signal is pretended unavailable.
WATCHDOG_CHILD = """
import time, e2e_voice.procs as p
p._set_pdeathsig = lambda sig: False
print(p.die_with_parent(interval=0.05), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for an init that does not reap counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _parent_and_child(code: str) -> tuple[subprocess.Popen[str], int, str]:
    """Start ``python -c code`` as the parent; it prints its child's pid (or starts one that prints)."""
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    line = parent.stdout.readline().strip()
    return parent, int(line.split()[0]), line


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_synth_pool_worker_dies_with_a_killed_parent() -> None:
    parent, worker, _ = _parent_and_child(PARENT)
    try:
        assert _alive(worker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _gone_within(worker, 5.0), f"worker {worker} outlived its killed parent"
    finally:
        parent.kill()
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_watchdog_fallback_ends_the_child() -> None:
    # The parent starts the child and prints its pid; then the parent is killed.
    code = (
        "import subprocess, sys, time\n"
        f"c = subprocess.Popen([sys.executable, '-c', {WATCHDOG_CHILD!r}],"
        " stdout=subprocess.PIPE, text=True)\n"
        "how = c.stdout.readline().strip()\n"
        "print(c.pid, how, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent, child, line = _parent_and_child(code)
    try:
        assert line.endswith("watchdog") and _alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _gone_within(child, 5.0), f"child {child} outlived its killed parent"
    finally:
        parent.kill()
        if _alive(child):
            os.kill(child, signal.SIGKILL)
