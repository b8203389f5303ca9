"""Bring real corpora into the manifest, and take ours out: moshi-finetune's stereo wav + word JSON.

moshi-finetune lists ``{"path": "x.wav", "duration": s}`` per line and keeps, beside each wav, a
``x.json`` with ``{"alignments": [[word, [start, end], speaker], ...]}``; the left channel is the
model (``SPEAKER_MAIN``), the right channel the user — the same convention as ours (0 = assistant).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from e2e_voice.data.manifest import ASSISTANT, USER, DialogueEntry, ManifestError, Word, parse_entry

MAIN_SPEAKER = "SPEAKER_MAIN"


def from_moshi_finetune(
    wav: str | os.PathLike[str], duration: float, *, main_speaker: str = MAIN_SPEAKER
) -> DialogueEntry:
    """Build a validated entry from a moshi-finetune wav and the ``.json`` alignment beside it."""
    wav = Path(wav)
    side = wav.with_suffix(".json")
    if not side.is_file():
        raise ManifestError(f"{wav}: alignment file {side} is missing")
    data: Any = json.loads(side.read_text("utf-8"))
    words = []
    for i, item in enumerate(data.get("alignments", [])):
        try:
            text, (start, end), speaker = item
        except (TypeError, ValueError) as exc:
            raise ManifestError(
                f"{side}: alignment {i} is not [word, [start, end], speaker]: {item!r}"
            ) from exc
        role = ASSISTANT if speaker == main_speaker else USER
        words.append({"word": text, "start": start, "end": end, "speaker": role})
    obj = {"id": wav.stem, "audio": str(wav.resolve()), "duration": duration, "words": words}
    return parse_entry(obj, wav.parent, str(side))


def to_moshi_finetune(entry: DialogueEntry) -> dict[str, Any]:
    """The moshi-finetune alignment JSON of an entry (write it beside a copy of the audio as ``.json``)."""
    return {
        "alignments": [
            [w.word, [w.start, w.end], MAIN_SPEAKER if w.speaker == ASSISTANT else "SPEAKER_USER"]
            for w in entry.words
        ]
    }


__all__ = ["MAIN_SPEAKER", "Word", "from_moshi_finetune", "to_moshi_finetune"]
