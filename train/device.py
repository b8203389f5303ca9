"""Which device a training run uses, from its config's ``device``: said, never guessed."""

from __future__ import annotations

import torch


def use_cuda(device: str) -> bool:
    """Whether a run configured with ``device`` trains on CUDA.

    A GPU recipe on a machine without a GPU stops here with the fix, instead of training for days on the CPU
    under settings (batch, precision, steps) chosen for a GPU.

    Args:
        device: ``cpu`` or ``cuda`` (the config's ``device``). Which GPUs: ``CUDA_VISIBLE_DEVICES``, and
            ``accelerate launch`` for several (accelerate places each process on its own).

    Raises:
        ValueError: another value, or ``cuda`` where torch sees no CUDA device.
    """
    name = str(device)
    if name == "cpu":
        return False
    if name != "cuda":
        raise ValueError(
            f"device must be 'cpu' or 'cuda', got {name!r} (pick GPUs with CUDA_VISIBLE_DEVICES)"
        )
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={name} but torch sees no CUDA device (torch {torch.__version__},"
            f" CUDA build: {torch.version.cuda or 'no'}): run this recipe on a GPU machine, or override"
            " device=cpu (and a CPU-sized batch and model) to run it here"
        )
    return True
