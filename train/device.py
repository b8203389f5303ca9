"""Which device a training run uses, from its config's ``device``: said, never guessed."""

from __future__ import annotations

from e2e_voice.devices import check_device


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
    if name not in ("cpu", "cuda"):
        raise ValueError(
            f"device must be 'cpu' or 'cuda', got {name!r} (pick GPUs with CUDA_VISIBLE_DEVICES)"
        )
    try:
        return check_device(name).type == "cuda"
    except ValueError as e:
        raise ValueError(f"{e} (and a CPU-sized batch and model, to train here)") from None
