"""End-of-turn decisions: when has the user finished speaking?

Today the only detector is VAD silence (the user stopped for ``min_silence_ms``). The interface takes
the user's audio of the turn as well, so a learned detector (Pipecat's Smart Turn, LiveKit's turn
model) can later look at prosody and words and say "not yet" on a mid-sentence pause.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class TurnDetector(Protocol):
    """Decides whether a pause ends the user's turn."""

    def is_end_of_turn(self, audio: np.ndarray, sample_rate: int, silence_s: float) -> bool:
        """Called when VAD reports silence after speech.

        Args:
            audio: the user's speech of this turn so far, mono float32.
            sample_rate: rate of ``audio``.
            silence_s: how long the user has been silent.

        Returns:
            True to end the turn now, False to keep listening.
        """
        ...


class SilenceTurnDetector:
    """Ends the turn as soon as VAD reports silence (the VAD's ``min_silence_ms`` is the endpointing)."""

    def is_end_of_turn(self, audio: np.ndarray, sample_rate: int, silence_s: float) -> bool:
        """Always True: the VAD's silence already is the decision."""
        return True
