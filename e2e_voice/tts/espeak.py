"""espeak-ng: IPA phonemes (for Kokoro and Piper) and a robotic but very fast synthesizer."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

_INSTALL_HINT = "install it with `sudo apt-get install espeak-ng` (or run `make setup` as root)"
_CLAUSE = re.compile(r"([.,!?;:]+)")


class EspeakError(RuntimeError):
    """espeak-ng is missing or failed."""


def espeak_binary() -> str:
    """Path of the espeak-ng executable, or an EspeakError that says how to install it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakError(f"espeak-ng is not installed; {_INSTALL_HINT}")
    return exe


def _run(args: list[str], text: str) -> bytes:
    proc = subprocess.run([espeak_binary(), *args], input=text.encode(), capture_output=True)
    if proc.returncode != 0:
        raise EspeakError(f"espeak-ng failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def phonemize(text: str, voice: str = "en-us") -> str:
    """IPA phonemes of ``text``, keeping clause punctuation (espeak drops it) between clauses.

    Example: ``"Hello, world."`` -> ``"həlˈoʊ, wˈɜːld."``
    """
    pieces = _CLAUSE.split(text)
    out: list[str] = []
    for i, piece in enumerate(pieces):
        if i % 2 == 1:  # a punctuation run
            out.append(piece)
            continue
        if not piece.strip():
            continue
        ipa = _run(["-q", "--ipa", "-v", voice, "--stdin"], piece).decode("utf-8")
        words = " ".join(ipa.split())
        if out and not out[-1].endswith(" "):
            out.append(" ")
        out.append(words)
    return "".join(out).strip()


def synthesize(
    text: str, voice: str = "en-us", words_per_minute: int = 165, pitch: int = 50
) -> tuple[np.ndarray, int]:
    """Synthesize with espeak-ng. Returns (float32 mono audio, sample rate 22050)."""
    # espeak-ng's --stdout WAV header has no length (it streams); libsndfile wants a real file.
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        args = ["-w", str(wav), "-v", voice, "-s", str(words_per_minute), "-p", str(pitch), "--stdin"]
        _run(args, text)
        audio, sr = sf.read(str(wav), dtype="float32")
    return audio, sr
