"""A diagnostic system: plays the user's audio back after a fixed delay.

Use it to check a microphone/speaker path and to measure the transport's own latency before blaming a
model (``e2e-voice serve system=loopback``). It is deterministic, so it also anchors the server tests.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from e2e_voice.system import DuplexSystem, SystemOutput


class LoopbackSystem(DuplexSystem):
    """Echo user frames ``delay_frames`` frames (80 ms each) later; a text tick every ``text_every`` frames.

    Args:
        delay_frames: frames of delay before the echo (0 echoes the same frame).
        gain: multiplier applied to the echoed audio.
        text_every: emit a text token (the frame index) every this many frames; 0 disables text.
    """

    def __init__(self, delay_frames: int = 3, gain: float = 1.0, text_every: int = 0) -> None:
        if delay_frames < 0:
            raise ValueError(f"delay_frames must be >= 0, got {delay_frames}")
        self.delay_frames, self.gain, self.text_every = delay_frames, gain, text_every
        self.reset()

    def reset(self) -> None:
        self._queue: deque[np.ndarray] = deque(
            np.zeros(self.frame_size, np.float32) for _ in range(self.delay_frames)
        )
        self._index = 0

    def step(self, user_frame: np.ndarray) -> SystemOutput:
        self._queue.append(self.check_frame(user_frame) * self.gain)
        out = self._queue.popleft()
        self._index += 1
        text = f" {self._index}" if self.text_every and self._index % self.text_every == 0 else ""
        return SystemOutput(audio=out, text=text)
