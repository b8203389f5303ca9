"""faster-whisper transcription and word error rate."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from e2e_voice.assets.registry import resolve
from e2e_voice.audio.io import resample

WHISPER_RATE = 16_000

_NUMBERS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "10": "ten",
    "11": "eleven",
    "12": "twelve",
}


def normalize_text(text: str) -> str:
    """Lower-case, spell out small numbers, drop punctuation and collapse spaces (for WER).

    A lighter cousin of Whisper's English normaliser: enough for read speech of short sentences.
    """
    text = text.lower().replace("’", "'")
    text = re.sub(r"[\[\(<][^\]\)>]*[\]\)>]", " ", text)  # [music], (laughs), <unk>
    text = re.sub(r"\b(\d{1,2})\b", lambda m: _NUMBERS.get(m.group(1), m.group(1)), text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    return " ".join(text.split())


def word_error_rate(
    references: list[str] | str,
    hypotheses: list[str] | str,
    normalize: Callable[[str], str] | None = None,
) -> float:
    """Corpus WER after normalisation (errors over reference words, via jiwer).

    Args:
        references: what was meant to be said.
        hypotheses: what the recogniser heard.
        normalize: text normaliser, default :func:`normalize_text`; the evaluation passes Whisper's.

    Pairs whose reference normalises to nothing are skipped; if all do, WER is undefined (ValueError).
    """
    import jiwer

    norm = normalize or normalize_text
    refs = [references] if isinstance(references, str) else list(references)
    hyps = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    pairs = [(norm(r), norm(h)) for r, h in zip(refs, hyps)]
    pairs = [(r, h) for r, h in pairs if r.strip()]
    if not pairs:
        raise ValueError("all references are empty after normalisation; WER is undefined")
    return float(jiwer.wer([r for r, _ in pairs], [h or "" for _, h in pairs]))


def word_hits(
    reference: str, hypothesis: str, normalize: Callable[[str], str] | None = None
) -> tuple[int, int]:
    """Words of ``reference`` heard in order in ``hypothesis``, and how many words the reference has.

    The hits are the longest common subsequence of the two word sequences. ``1 - hits / words`` is the
    missed-word rate: unlike WER it ignores inserted words, so a recogniser that hallucinates over garbled
    audio cannot push it past 100 %; it measures how much of what was said came through. It is at most the
    WER. (The hits of WER's own alignment are not used: several alignments have the minimal edit count,
    and which one an implementation picks changes its hits.)

    Args:
        reference: what was meant to be said.
        hypothesis: what the recogniser heard.
        normalize: text normaliser, default :func:`normalize_text` (the same as :func:`word_error_rate`).
    """
    norm = normalize or normalize_text
    ref, hyp = norm(reference).split(), norm(hypothesis).split()
    # One row of the LCS table at a time: best[j] = hits of ref[:i] against hyp[:j].
    best = [0] * (len(hyp) + 1)
    for word in ref:
        diagonal = 0
        for j, heard in enumerate(hyp, start=1):
            diagonal, best[j] = best[j], diagonal + 1 if word == heard else max(best[j], best[j - 1])
    return best[-1], len(ref)


@dataclass
class WhisperSTT:
    """A faster-whisper model resolved through the registry.

    Args:
        model: registry name (``whisper-base`` in the offline bundle; ``whisper-small`` by path or hub).
        model_path: explicit CTranslate2 model directory, wins over ``model``.
        compute_type: CTranslate2 compute type (``int8`` is fastest on CPU).
        device: ``cpu`` or ``cuda``.
        language: fixed language code, or None to detect.
        beam_size: 1 is greedy decoding.
        threads: CPU threads (0 lets CTranslate2 choose).
        temperature_fallback: retry a window at rising sampling temperatures when decoding looks
            degenerate (faster-whisper's default). Off by default: sampling makes the same audio give
            different transcripts from run to run, which a judge and a reproducible benchmark cannot have.

    Note:
        While one is alive, torch runs slower on CPU in the same process. CTranslate2's OpenMP calls bind
        to torch's libgomp (torch loads it globally first), so its threads count against the cores, and
        libgomp then stops spin-waiting between parallel regions. Measured on 2 cores: a codec training
        step took 0.146 s instead of 0.113 s, an engine tick (committed pair, one conversation) 41.0 ms
        instead of 26.8 ms, a loop of small matmuls 1.9x as long. Deleting the model restores the speed.
        So time torch work before building one, or in another process (``eval.bench`` and ``eval.codec``
        do; codec training computes its teacher features in a child).
        ``OMP_WAIT_POLICY=ACTIVE`` also removes the slowdown, but it made the cascade 1.6x slower
        (voice-to-voice p50 4.4 s vs 2.8 s): its spinning threads take the CPU from CTranslate2 and
        onnxruntime.
    """

    model: str = "whisper-base"
    model_path: str | None = None
    compute_type: str = "int8"
    device: str = "cpu"
    language: str | None = "en"
    beam_size: int = 1
    threads: int = 0
    temperature_fallback: bool = False
    _model: Any = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        from faster_whisper import WhisperModel

        path = resolve(self.model, self.model_path)
        self._model = WhisperModel(
            str(path), device=self.device, compute_type=self.compute_type, cpu_threads=self.threads
        )

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        """Transcribe mono float audio (``[T]`` or ``[1, T]``) at any rate; returns the text."""
        mono = np.asarray(audio, dtype=np.float32).reshape(-1)
        if mono.size == 0:
            raise ValueError("cannot transcribe empty audio")
        mono = resample(mono, sample_rate, WHISPER_RATE)
        segments, _ = self._model.transcribe(
            mono,
            beam_size=self.beam_size,
            language=self.language,
            condition_on_previous_text=False,
            temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if self.temperature_fallback else 0.0,
        )
        return " ".join(s.text.strip() for s in segments).strip()
