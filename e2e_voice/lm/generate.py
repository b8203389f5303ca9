"""The full-duplex generation step: one 80 ms frame of user codes in, the assistant's text token and
audio codes for one frame out, for a batch of conversations that start and stop independently.

Wraps moshi's ``LMGen`` (which holds the KV caches and the small ring buffer that realigns delayed
streams). Each conversation has its own position: :meth:`LMStep.reset` restarts the selected rows
(moshi's ``reset_streaming(reset_mask)`` zeroes their offsets and KV caches), and ``active`` rows
can be paused (moshi's ``exec_mask``: a paused row neither advances nor changes its state). On CUDA,
``LMGen`` captures the temporal and depth transformers in CUDA graphs (moshi's ``CUDAGraphed``);
on CPU those wrappers run eagerly.

Alignment with the training streams: the assistant's frame ``t`` is generated at call ``t`` from
the user codes of calls ``<= t``; in the aligned training streams those are the user's frames
``<= t - 1`` (the model's frame ``t`` conditions on the user's past only, and the codes given at the
first call of a conversation are not used). With a maximum delay of ``D`` frames (1 for Moshi's
acoustic delay), a call returns the assistant's frame ``D`` calls earlier, complete with all its
codebooks; during a conversation's first ``D`` calls ``ready`` is False and the tokens are
meaningless.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from moshi.models.lm import LMGen, LMModel
from moshi.utils.compile import no_cuda_graph

from e2e_voice.lm import row_sampling
from e2e_voice.lm.model import eager_on_cpu

row_sampling.install()


@dataclass(frozen=True)
class Sampling:
    """Separate sampling settings for text and audio (``temperature = 0`` means greedy)."""

    temperature_text: float = 0.7
    top_k_text: int = 25
    temperature_audio: float = 0.8
    top_k_audio: int = 250


GREEDY = Sampling(temperature_text=0.0, top_k_text=0, temperature_audio=0.0, top_k_audio=0)


@dataclass
class LMStepOutput:
    """One frame of the assistant, per conversation."""

    text: torch.Tensor  # [B] long, text token (pad / end-of-pad / word piece)
    audio: torch.Tensor  # [B, n_q] long, the assistant's codes for the frame
    ready: torch.Tensor  # [B] bool, False while a conversation's delay line is filling (or paused)


class LMStep:
    """Frame-by-frame generation for a batch of conversations.

    Args:
        lm: the model (put in eval mode here).
        sampling: text / audio temperatures and top-k.

    Usage::

        step = LMStep(lm, Sampling())
        with step.streaming(batch_size=4):
            out = step.step(user_codes)          # [4, n_q, 1] -> LMStepOutput
            step.reset(torch.tensor([False, True, False, False]))  # row 1 starts a new conversation
            step.seed(1, 1234)                   # ... and samples from its own stream, from now on
    """

    def __init__(self, lm: LMModel, sampling: Sampling = GREEDY) -> None:
        lm.eval()
        self.lm = lm
        self.n_q = lm.dep_q
        if lm.n_q != 2 * lm.dep_q:
            raise ValueError(
                "expected a full-duplex model with 2 * dep_q audio streams, "
                f"got n_q={lm.n_q}, dep_q={lm.dep_q}"
            )
        # LMGen has one use_sampling switch; a zero temperature makes moshi's sample_token greedy for
        # that stream alone, so text and audio can still differ.
        self.gen = LMGen(
            lm,
            use_sampling=sampling.temperature_text > 0 or sampling.temperature_audio > 0,
            temp=sampling.temperature_audio,
            temp_text=sampling.temperature_text,
            top_k=sampling.top_k_audio,
            top_k_text=sampling.top_k_text,
            support_out_of_sync=True,  # conversations start at different times
        )
        self.max_delay = self.gen.max_delay
        self._batch_size: int | None = None
        # Per row: its seed, its random stream (None: torch's global one) and whether it steps.
        self._seeds: list[int | None] = []
        self._generators: list[torch.Generator | None] = []
        self._active: list[bool] = []

    @contextmanager
    def streaming(self, batch_size: int) -> Iterator[LMStep]:
        """Allocate the per-conversation state for ``batch_size`` rows; cleared on exit."""
        if self._batch_size is not None:
            raise RuntimeError(
                "LMStep is already streaming: leave the current `with step.streaming(...)` first"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        with self.gen.streaming(batch_size):
            self._batch_size = batch_size
            self._seeds, self._generators = [None] * batch_size, [None] * batch_size
            self._active = [True] * batch_size
            try:
                yield self
            finally:
                self._batch_size = None

    def _check_mask(self, mask: torch.Tensor, name: str) -> torch.Tensor:
        if self._batch_size is None:
            raise RuntimeError(f"{name}() needs a streaming context: `with step.streaming(batch_size):`")
        if mask.shape != (self._batch_size,) or mask.dtype != torch.bool:
            raise ValueError(
                f"{name} mask must be a bool tensor of shape [{self._batch_size}], got "
                f"{tuple(mask.shape)} {mask.dtype}"
            )
        return mask.to(self.lm.device)

    def reset(self, mask: torch.Tensor) -> None:
        """Start a new conversation on the rows where ``mask`` ([B] bool) is True.

        A seeded row restarts its random stream too, so a reset conversation repeats from its start.
        """
        self.gen.reset_streaming(self._check_mask(mask, "reset"))
        for row in torch.nonzero(mask.cpu()).flatten().tolist():
            self.seed(row, self._seeds[row])

    def seed(self, row: int, seed: int | None) -> None:
        """Give ``row`` its own random stream from ``seed`` (None: back to torch's global generator)."""
        if self._batch_size is None:
            raise RuntimeError("seed() needs a streaming context: `with step.streaming(batch_size):`")
        if not 0 <= row < self._batch_size:
            raise ValueError(f"row {row} is outside the batch of {self._batch_size}")
        self._seeds[row] = seed
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.lm.device)
            gen.manual_seed(int(seed))
        self._generators[row] = gen

    def set_active(self, mask: torch.Tensor) -> None:
        """Rows where ``mask`` is False are paused: later steps leave their state untouched."""
        self.gen.set_exec_mask(self._check_mask(mask, "set_active"))
        self._active = mask.cpu().tolist()

    @torch.no_grad()
    def step(self, user_codes: torch.Tensor) -> LMStepOutput:
        """Advance every active conversation by one 80 ms frame.

        Args:
            user_codes: ``[B, n_q, 1]`` long, the user's codes for this frame.

        Returns:
            The assistant's frame from ``max_delay`` steps ago (see the module docstring).
        """
        if self._batch_size is None:
            raise RuntimeError("step() needs a streaming context: `with step.streaming(batch_size):`")
        if (
            user_codes.dim() != 3
            or user_codes.shape[0] != self._batch_size
            or user_codes.shape[1] != self.n_q
        ):
            raise ValueError(
                f"expected user codes [B={self._batch_size}, n_q={self.n_q}, 1], "
                f"got {tuple(user_codes.shape)}"
            )
        if user_codes.shape[2] != 1:
            raise ValueError(
                f"step() takes exactly one 80 ms frame, got {user_codes.shape[2]}: call it once per frame"
            )
        with contextlib.ExitStack() as stack:
            stack.enter_context(eager_on_cpu(self.lm.device))
            if any(g is not None for g in self._generators):
                stack.enter_context(row_sampling.row_generators(self._generators, self._active))
                stack.enter_context(no_cuda_graph())  # a captured graph would replay the same draws
            out = self.gen.step(user_codes.to(self.lm.device))
        assert out is not None  # support_out_of_sync=True always returns a frame
        ready = (out[:, 0, 0] != self.lm.ungenerated_token_id) & (out[:, 1:, 0] >= 0).all(dim=1)
        return LMStepOutput(text=out[:, 0, 0], audio=out[:, 1:, 0], ready=ready)
