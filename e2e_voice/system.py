"""The full-duplex *system* interface: user audio frames in, assistant audio and text out.

The server, ``e2e-voice converse`` and the evaluation drive any object with this interface; the
end-to-end engine (``e2e_voice``) and the cascade (``cascade_baseline``) both implement it, and Hydra's
``_target_`` picks one, so the library never imports the baseline.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE


@dataclass
class SystemOutput:
    """What a system produced for one input frame.

    Attributes:
        audio: assistant audio for this frame, float32 ``[FRAME_SIZE]`` at 24 kHz (zeros when silent).
        text: text the assistant emitted during this frame ("" when none).
        events: named timestamps or flags for metrics (e.g. ``{"llm_first_token": 1.23}``).
    """

    audio: np.ndarray
    text: str = ""
    events: dict[str, float] = field(default_factory=dict)


class DuplexSystem(abc.ABC):
    """A conversation partner that consumes and produces exactly one 80 ms frame per step."""

    sample_rate: int = SAMPLE_RATE
    frame_size: int = FRAME_SIZE

    @abc.abstractmethod
    def reset(self) -> None:
        """Start a new conversation (forget history and streaming state)."""

    @abc.abstractmethod
    def step(self, user_frame: np.ndarray) -> SystemOutput:
        """Consume one frame of user audio (float32 ``[FRAME_SIZE]``) and return the assistant's frame."""

    def close(self) -> None:  # noqa: B027  # optional hook, a no-op unless the system holds resources
        """Release what the conversation holds (e.g. a slot of a batched engine). Idempotent."""

    def check_frame(self, user_frame: np.ndarray) -> np.ndarray:
        """Validate one user frame; raise with a message that says how to fix the input."""
        frame = np.asarray(user_frame, dtype=np.float32).reshape(-1)
        if frame.shape[0] != self.frame_size:
            ms = 1000 * self.frame_size / self.sample_rate
            raise ValueError(
                f"expected {self.frame_size} samples per frame ({ms:.0f} ms at {self.sample_rate} Hz), got"
                f" {frame.shape[0]}: buffer input to whole frames"
            )
        if not np.isfinite(frame).all():
            raise ValueError("user frame contains NaN or infinite samples")
        return frame

    def busy(self) -> bool:
        """Whether an answer is still pending or playing (``converse`` keeps feeding silence until not)."""
        return False

    def metrics(self) -> list[dict[str, Any]]:
        """Per-turn metrics as plain dicts (logged metrics; empty when a system keeps none)."""
        return []
