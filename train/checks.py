"""Checks of the ``train`` settings both trainers share, made before any work starts.

Hydra accepts ``train.steps=-5`` or ``train.steps=1.5`` as a value; the loops would then do nothing, or
``int()`` would quietly round. These turn such values into an error that names the setting.
"""

from __future__ import annotations

from typing import Any

# setting -> smallest accepted value
TRAIN_INTS = {
    "steps": 1,
    "batch_size": 1,
    "grad_accum": 1,
    "log_every": 1,
    "save_every": 1,
    "warmup_steps": 0,
}


def whole_number(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int if it is a whole number >= ``minimum``, else a ValueError naming ``name``."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if not ok:
        raise ValueError(f"{name}={value!r}: give a whole number >= {minimum}")
    return int(value)


def check_train(train: Any) -> None:
    """Validate the shared ``train`` group (a DictConfig or mapping) before a run starts."""
    for key, minimum in TRAIN_INTS.items():
        if key in train:
            whole_number(train[key], f"train.{key}", minimum)
