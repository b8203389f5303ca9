"""Festival (``text2wave``) with the festvox diphone voices, used for varied user voices."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

_INSTALL_HINT = (
    "install it with `sudo apt-get install festival festvox-kallpc16k` (or run `make setup` as root)"
)


class FestivalError(RuntimeError):
    """festival is missing or failed."""


def synthesize(
    text: str, voice: str = "kal_diphone", duration_stretch: float = 1.0
) -> tuple[np.ndarray, int]:
    """Synthesize ``text`` with festival's ``text2wave``.

    Args:
        text: English text.
        voice: an installed festival voice (``kal_diphone`` from festvox-kallpc16k).
        duration_stretch: >1 speaks slower.

    Returns:
        (float32 mono audio, sample rate; 16 kHz for kal_diphone).
    """
    if not text.strip():
        raise ValueError("cannot synthesize empty text")
    exe = shutil.which("text2wave")
    if exe is None:
        raise FestivalError(f"festival is not installed; {_INSTALL_HINT}")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        txt = Path(tmp) / "in.txt"
        txt.write_text(text, encoding="utf-8")
        args = [exe, "-o", str(wav), "-eval", f"(voice_{voice})"]
        args += ["-eval", f"(Parameter.set 'Duration_Stretch {duration_stretch:.3f})", str(txt)]
        proc = subprocess.run(args, capture_output=True)
        if proc.returncode != 0 or not wav.is_file():
            raise FestivalError(
                f"festival failed for voice '{voice}' ({proc.returncode}):"
                f" {proc.stderr.decode(errors='replace')[-300:]}; is the voice installed?"
            )
        audio, sr = sf.read(str(wav), dtype="float32")
    return np.asarray(audio, dtype=np.float32).reshape(-1), int(sr)
