"""Ogg/Opus round trips: what the websocket protocol does to audio on its way."""

from __future__ import annotations

import numpy as np
import sphn

from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE


def opus_roundtrip(audio: np.ndarray) -> np.ndarray:
    """Stream ``[T]`` audio through Ogg/Opus in 80 ms frames (what the websocket protocol carries)."""
    writer, reader = sphn.OpusStreamWriter(SAMPLE_RATE), sphn.OpusStreamReader(SAMPLE_RATE)
    padded = np.pad(audio, (0, (-len(audio)) % FRAME_SIZE))
    out = []
    for i in range(0, len(padded), FRAME_SIZE):
        data = writer.append_pcm(padded[i : i + FRAME_SIZE])
        if data:
            pcm = reader.append_bytes(data)
            if pcm is not None and len(pcm):
                out.append(pcm)
    return np.concatenate(out)[: len(audio)] if out else np.zeros(0, np.float32)
