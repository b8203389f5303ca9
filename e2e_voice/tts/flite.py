"""flite (CMU Flite): small, fast diphone/cluster-unit voices, used for varied user voices."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

_INSTALL_HINT = "install it with `sudo apt-get install flite` (or run `make setup` as root)"
FLITE_VOICES = ("slt", "rms", "awb", "kal16", "kal", "awb_time")
"""Voices compiled into Debian's flite binary (``flite -lv``)."""


class FliteError(RuntimeError):
    """flite is missing or failed."""


def synthesize(
    text: str, voice: str = "slt", duration_stretch: float = 1.0, f0_mean: float | None = None
) -> tuple[np.ndarray, int]:
    """Synthesize ``text`` with flite.

    Args:
        text: English text.
        voice: one of :data:`FLITE_VOICES`.
        duration_stretch: >1 speaks slower.
        f0_mean: target mean pitch in Hz (the voice's own when None).

    Returns:
        (float32 mono audio, sample rate) — 16 kHz for most voices, 8 kHz for ``kal``.
    """
    if not text.strip():
        raise ValueError("cannot synthesize empty text")
    exe = shutil.which("flite")
    if exe is None:
        raise FliteError(f"flite is not installed; {_INSTALL_HINT}")
    if voice not in FLITE_VOICES:
        raise ValueError(f"unknown flite voice '{voice}'; available: {', '.join(FLITE_VOICES)}")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        txt = Path(tmp) / "in.txt"
        txt.write_text(text, encoding="utf-8")
        args = [exe, "-voice", voice, "-f", str(txt), "-o", str(wav)]
        args += ["--setf", f"duration_stretch={duration_stretch:.3f}"]
        if f0_mean is not None:
            args += ["--setf", f"int_f0_target_mean={f0_mean:.1f}"]
        proc = subprocess.run(args, capture_output=True)
        if proc.returncode != 0 or not wav.is_file():
            raise FliteError(f"flite failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
        audio, sr = sf.read(str(wav), dtype="float32")
    return np.asarray(audio, dtype=np.float32).reshape(-1), int(sr)
