"""A configured torch device, checked before anything is loaded onto it."""

from __future__ import annotations

import torch


def check_device(device: str) -> torch.device:
    """``device`` (``cpu``, ``cuda`` or ``cuda:N``) as a torch device that exists on this machine.

    Raises:
        ValueError: another kind of device, or a CUDA device torch cannot see here; the message names the
            setting and how to go on, instead of an error from deep inside the first ``.to(device)``.
    """
    name = str(device)
    if name != "cpu" and name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={name} but torch sees no CUDA device (torch {torch.__version__},"
            f" CUDA build: {torch.version.cuda or 'no'}): run on a GPU machine, or set device=cpu"
        )
    found = torch.device(name)
    if found.index is not None and found.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={name} but torch sees {torch.cuda.device_count()} CUDA device(s) (indices from 0)"
        )
    return found
