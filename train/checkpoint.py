"""Training checkpoints: written atomically (temp file + rename), holding RNG states for exact resume.

Both trainers share one resume behaviour: a run directory that holds ``checkpoint.pt`` is continued from
it (never silently started over), the rows a killed run logged past its checkpoint are dropped from
``metrics.jsonl`` so a resumed run does not log its replayed steps twice, and temporary files left by a
save that was killed mid-write are removed at the next start or save.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Every global RNG a training step may draw from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename: a killed run never leaves a
    torn file, and a failed write (disk full) leaves the previous file and no temporary one. The temporary
    name carries the process id, so two processes writing the same file do not mix their bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class CheckpointError(RuntimeError, ValueError):
    """A checkpoint that cannot be read; the message names the file and what to do.

    A ValueError too, so that the CLI reports it as bad input (one line, exit code 2), not as a crash.
    """


def load_checkpoint(path: str | Path, hint: str = "delete it to start the run afresh") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (it holds RNG and optimizer state).

    Anything that is not such a checkpoint (a wav, a truncated file, a codec's safetensors) raises
    :class:`CheckpointError` naming the file and ``hint``, instead of torch's unpickling traceback.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path} ({_first_line(e)}); {hint}") from e
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a training checkpoint (no 'step' in it); {hint}")
    return dict(state)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_tmp(path: str | Path) -> list[Path]:
    """Delete ``<path>.<pid>.tmp`` files whose writer is dead (a save killed mid-write leaves one, as
    large as the checkpoint, that nothing else ever removes). A live writer's file is left alone; our own
    pid's counts as stale, since we call this before writing. Returns the files removed."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f"{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 1 : -len(".tmp")]
        if not pid.isdigit() or (int(pid) != os.getpid() and _pid_alive(int(pid))):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def truncate_metrics(path: str | Path, step: int) -> int:
    """Drop the rows of the JSONL log ``path`` logged after ``step`` (a killed run's steps past its last
    checkpoint, which the resumed run replays and logs again); returns how many were dropped. The rows are
    in step order, so the first row past ``step``, or without one, or torn by the kill, ends the kept part."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    keep: list[str] = []
    for line in lines:
        try:
            row = json.loads(line)
            row_step = int(row["step"])
        except (ValueError, KeyError, TypeError):
            break
        if row_step > step:
            break
        keep.append(line)
    dropped = len(lines) - len(keep)
    if dropped:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in keep))
        tmp.replace(path)
    return dropped
