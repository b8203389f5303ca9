"""Per-conversation random streams for moshi's token sampling, so a seeded conversation repeats exactly.

moshi's ``LMGen`` samples every row of the batch from torch's global generator, in one draw over the
whole batch (``moshi.utils.sampling.multinomial``: an exponential race, ``argmax(p / E)`` with ``E ~
Exp(1)``). What one conversation draws therefore depends on its row index, on the batch size, and on every
tick the engine ran for the other conversations before. A seeded conversation could not be repeated,
which makes the end-to-end system's evaluation numbers move from run to run.

This module gives each row its own ``torch.Generator``. ``LMGen`` calls the name ``sample_token`` in
``moshi.models.lm``; :func:`install` points that name at :func:`sample_token`, which samples exactly
as moshi does (softmax at the temperature, top-k, the same exponential race) unless the calling thread
is inside :func:`row_generators`. Inside it, each active row draws its race noise from its own
generator, or from the global one when it has none, and paused rows draw nothing, so a seeded row's
tokens depend only on its seed and its own inputs. Outside the context nothing changes, and moshi's
CUDA graphs keep working; inside it a CUDA step runs eagerly (a captured graph would replay the same
draws), which :class:`~e2e_voice.lm.generate.LMStep` arranges.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import moshi.models.lm as moshi_lm
import torch

_LOCAL = threading.local()
_MOSHI_SAMPLE_TOKEN = moshi_lm.sample_token


@contextlib.contextmanager
def row_generators(generators: Sequence[torch.Generator | None], active: Sequence[bool]) -> Iterator[None]:
    """Sample the rows of the ``LMGen`` steps run by this thread inside the context from these streams.

    Args:
        generators: one per batch row; None draws that row from torch's global generator.
        active: one per batch row; an inactive (paused) row draws nothing (its token is discarded).
    """
    if len(generators) != len(active):
        raise ValueError(f"{len(generators)} generators for {len(active)} rows")
    previous = getattr(_LOCAL, "rows", None)
    _LOCAL.rows = (list(generators), list(active))
    try:
        yield
    finally:
        _LOCAL.rows = previous


def sample_rows(
    logits: torch.Tensor,
    temp: float,
    top_k: int,
    generators: Sequence[torch.Generator | None],
    active: Sequence[bool],
) -> torch.Tensor:
    """Sample one token per position of ``logits`` ``[B, ..., card]`` with per-row random streams.

    The distribution is moshi's (softmax of ``logits / temp``, restricted to the ``top_k`` largest when
    ``top_k > 0``); returns ``[B, ...]`` long.
    """
    if logits.shape[0] != len(generators):
        raise ValueError(f"logits for {logits.shape[0]} rows, {len(generators)} generators")
    probs = torch.softmax(logits / temp, dim=-1)
    indices = None
    if top_k > 0:
        probs, indices = torch.topk(probs, min(top_k, probs.shape[-1]), dim=-1)
    race = torch.ones_like(probs)  # a paused row: argmax of its probabilities, never used
    for row, (gen, on) in enumerate(zip(generators, active)):
        if on:
            race[row].exponential_(1, generator=gen)
    choice = (probs / race).argmax(dim=-1, keepdim=True)
    if indices is not None:
        choice = indices.gather(-1, choice)
    return choice[..., 0]


def sample_token(
    logits: torch.Tensor,
    use_sampling: bool = False,
    temp: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
) -> torch.Tensor:
    """moshi's ``sample_token``, with per-row streams inside :func:`row_generators`."""
    rows = getattr(_LOCAL, "rows", None)
    if rows is None or not use_sampling or temp <= 0.0 or top_p > 0.0:
        # top_p is not used by LMGen; it keeps moshi's global-stream sampling if a caller sets it.
        return _MOSHI_SAMPLE_TOKEN(logits, use_sampling, temp, top_k, top_p)
    return sample_rows(logits, temp, top_k, *rows)


def install() -> None:
    """Route ``LMGen``'s sampling through :func:`sample_token` (idempotent; a no-op for unseeded steps)."""
    moshi_lm.sample_token = sample_token
