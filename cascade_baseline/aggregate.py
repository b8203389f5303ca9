"""Group streamed LLM text into speakable pieces before TTS.

TTS engines sound right only on whole clauses, but waiting for a whole answer costs seconds. Cutting
at the first sentence end (``sentence``) is what Pipecat does; cutting also at a comma or semicolon once
a piece is long enough (``phrase``) gets the first audio out sooner at a small cost in prosody.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

# A boundary is punctuation followed by whitespace: seeing the space rules out "3.5" and "e.g.x".
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s")
_PHRASE_END = re.compile(r"[,;:—]+\s|[.!?…]+[\"')\]]*\s")


@dataclass
class TextAggregator:
    """Accumulates text pieces and returns complete sentences or phrases.

    Args:
        mode: ``sentence`` (cut at . ! ?) or ``phrase`` (also at , ; : once ``min_phrase_chars`` long).
        min_phrase_chars: a phrase shorter than this is not cut at a comma (avoids "Well," alone).
    """

    mode: Literal["sentence", "phrase"] = "phrase"
    min_phrase_chars: int = 16
    _buf: str = field(init=False, default="")

    def __post_init__(self) -> None:
        if self.mode not in ("sentence", "phrase"):
            raise ValueError(f"cascade.aggregation.mode must be 'sentence' or 'phrase', got '{self.mode}'")

    def push(self, text: str) -> list[str]:
        """Add streamed text; returns the pieces it completed (stripped, non-empty)."""
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                return out
            piece, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if piece:
                out.append(piece)

    def _find_cut(self) -> int | None:
        sentence = _SENTENCE_END.search(self._buf)
        if self.mode == "phrase":
            for m in _PHRASE_END.finditer(self._buf):
                if sentence is not None and m.start() >= sentence.start():
                    break
                if len(self._buf[: m.end()].strip()) >= self.min_phrase_chars:
                    return m.end()
        return sentence.end() if sentence else None

    def flush(self) -> str:
        """The remaining text (end of the answer), and clear the buffer."""
        piece, self._buf = self._buf.strip(), ""
        return piece
