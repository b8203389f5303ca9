"""e2e-voice: full-duplex end-to-end speech-to-speech models with a cascade baseline.

Shape legend used across the package:
    audio   [B, C, T]  batch, channels, samples (24 kHz unless a name says otherwise)
    codes   [B, K, T]  batch, codebooks, frames (12.5 Hz)
    hidden  [B, T, D]  batch, frames, model dimension
"""

from e2e_voice.constants import FRAME_RATE, FRAME_SIZE, SAMPLE_RATE

__version__ = "0.1.0"
__all__ = ["FRAME_RATE", "FRAME_SIZE", "SAMPLE_RATE", "__version__"]
