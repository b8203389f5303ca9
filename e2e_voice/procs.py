"""Child processes that do not outlive their parent.

A pool worker whose parent is killed with SIGKILL is not told: it is re-parented to PID 1 (or a
subreaper) and goes on with its queued work. ``synth-data``'s workers did exactly that after a
``kill -9`` of the main process (~430 MB each), writing into ``out_dir`` while a rerun started there.
:func:`die_with_parent`, called first thing in a child (a pool's ``initializer``), ends it when its
parent dies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _parent_pid() -> int:
    """The pid of the process that started this one: multiprocessing knows it even if that parent has
    died already (``os.getppid()`` would then name the reaper)."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid is not None else os.getppid()


def _set_pdeathsig(sig: int) -> bool:
    """Ask the Linux kernel to send ``sig`` to this process when its parent thread exits."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int, interval: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(interval: float = 1.0) -> str:
    """End this process (SIGKILL) as soon as its parent dies, however the parent died.

    On Linux the kernel does it (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere, or if that call
    fails, a daemon thread polls ``os.getppid()`` every ``interval`` seconds. The kernel's signal follows
    the parent *thread* that started the child, so call this in children started from a thread that
    lives as long as the parent (the main thread, as ``ProcessPoolExecutor.submit`` there does). A parent
    that died before the call is caught too. Returns ``"prctl"`` or ``"watchdog"``, the way chosen.
    """
    parent = _parent_pid()
    how = "prctl" if _set_pdeathsig(signal.SIGKILL) else "watchdog"
    if os.getppid() != parent:  # the parent died before the kernel was told to watch it
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "watchdog":
        threading.Thread(target=_watch, args=(parent, interval), name="die-with-parent", daemon=True).start()
    return how
