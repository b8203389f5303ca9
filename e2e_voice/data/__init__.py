"""Two-channel spoken-dialogue data: manifest, synthetic generator, training windows.

Channel convention (as in Moshi and moshi-finetune): channel 0 = assistant (the model's own voice),
channel 1 = user; 24 kHz. Audio ``[C=2, T]``; a batch of windows ``[B, 2, T]``.
"""

from e2e_voice.data.manifest import (
    ASSISTANT,
    CHANNEL_OF,
    USER,
    DialogueEntry,
    Event,
    ManifestError,
    ManifestReport,
    Turn,
    Word,
    read_manifest,
    write_manifest,
)

__all__ = [
    "ASSISTANT",
    "CHANNEL_OF",
    "USER",
    "DialogueEntry",
    "Event",
    "ManifestError",
    "ManifestReport",
    "Turn",
    "Word",
    "read_manifest",
    "write_manifest",
]
