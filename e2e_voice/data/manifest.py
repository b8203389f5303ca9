"""The dialogue manifest: one JSON line per two-channel conversation, validated on read.

Example line (wrapped here)::

    {"id": "conv_000003", "audio": "audio/conv_000003.flac", "duration": 21.44, "sample_rate": 24000,
     "split": "train", "scenarios": ["smooth", "pause", "noise"],
     "words": [{"word": "What", "start": 0.52, "end": 0.71, "speaker": "user"}, ...],
     "turns": [{"speaker": "user", "start": 0.52, "end": 2.1, "text": "What is a good ..."}, ...],
     "events": [{"kind": "turn_gap", "start": 2.1, "end": 2.31, "info": {}}, ...],
     "noise_snr_db": 15.0, "voices": {"assistant": "kokoro:jm_kumo rate=1.00", "user": "flite:slt ..."}}

``audio`` is relative to the manifest's directory (or absolute), so a corpus can be moved as a whole.
Channel 0 holds the assistant, channel 1 the user. Times are seconds from the start of the file.
Real corpora fit the same shape: a Fisher-style stereo call, or moshi-finetune's stereo wav with its
word-timestamp JSON, only need ``words`` (and optionally ``turns``); ``scenarios``/``events`` may be empty.

Event kinds and their meaning (the scenario's timing ground truth):
    ``turn_gap``: user turn ends at ``start``, assistant starts at ``end``.
    ``pause``: silence inside one user turn, ``start``..``end``; the assistant must not take the turn.
    ``interruption``: user starts at ``start`` while the assistant speaks; the assistant channel is cut
        (with a short fade) at ``end``; ``info.max_stop_s`` is the stated bound on ``end - start``.
    ``backchannel``: user says ``info.text`` (``start``..``end``) while the assistant keeps talking.
    ``long_silence``: nobody speaks from ``start`` to ``end``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from e2e_voice.constants import SAMPLE_RATE

ASSISTANT, USER = "assistant", "user"
CHANNEL_OF = {ASSISTANT: 0, USER: 1}
"""Speaker -> channel index in the stereo file."""
EVENT_KINDS = ("turn_gap", "pause", "interruption", "backchannel", "long_silence")
_TOLERANCE_S = 0.02  # rounding of times to 1 ms and of durations to whole samples


class ManifestError(ValueError):
    """A manifest line is malformed or points at unusable audio; the message names the line."""


@dataclass(frozen=True)
class Word:
    """One aligned word. Times in seconds; ``speaker`` is ``assistant`` or ``user``."""

    word: str
    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class Turn:
    """One utterance of one speaker (a pause scenario splits a user turn into two)."""

    speaker: str
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Event:
    """Scenario ground truth (see the module docstring for each ``kind``)."""

    kind: str
    start: float
    end: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QA:
    """One exchange of the closed-domain task (``synth-data corpus=task``): what was asked, the one right
    answer and the key words that make an answer right; ``asked_end`` is when the question ended and
    ``answer_start`` when the reference answer starts (seconds); ``interrupted``: the user cut the answer."""

    category: str
    question: str
    answer: str
    key_words: tuple[str, ...]
    asked_end: float
    answer_start: float
    interrupted: bool = False


@dataclass(frozen=True)
class DialogueEntry:
    """One conversation.

    Attributes:
        id: unique id within the corpus.
        audio: resolved path of the stereo file (``[C=2, T]``, 24 kHz).
        duration: seconds.
        words: aligned words of both speakers, sorted by start.
        turns: utterances of both speakers, sorted by start.
        events: scenario ground truth.
        scenarios: tags of the scenarios present.
        split: ``train``, ``valid`` or ``test``.
        noise_snr_db: SNR of the background noise mixed into the user channel, None if clean.
        voices: readable voice description per speaker.
        sample_rate: 24000.
        qa: the task's exchanges, in order (empty outside the task corpus).
    """

    id: str
    audio: Path
    duration: float
    words: tuple[Word, ...]
    turns: tuple[Turn, ...] = ()
    events: tuple[Event, ...] = ()
    scenarios: tuple[str, ...] = ()
    split: str = "train"
    noise_snr_db: float | None = None
    voices: dict[str, str] = field(default_factory=dict)
    sample_rate: int = SAMPLE_RATE
    qa: tuple[QA, ...] = ()

    def words_of(self, speaker: str) -> list[Word]:
        """The words of one speaker."""
        return [w for w in self.words if w.speaker == speaker]

    def events_of(self, kind: str) -> list[Event]:
        """The events of one kind."""
        return [e for e in self.events if e.kind == kind]

    def to_json(self, root: Path | None = None) -> dict[str, Any]:
        """JSON object of this entry; ``audio`` is written relative to ``root`` when it lies below it."""
        audio = str(self.audio)
        if root is not None and self.audio.is_absolute():
            audio = os.path.relpath(self.audio, root)
        out = {
            "id": self.id,
            "audio": audio,
            "duration": round(self.duration, 4),
            "sample_rate": self.sample_rate,
            "split": self.split,
            "scenarios": list(self.scenarios),
            "words": [asdict(w) for w in self.words],
            "turns": [asdict(t) for t in self.turns],
            "events": [asdict(e) for e in self.events],
            "noise_snr_db": self.noise_snr_db,
            "voices": dict(self.voices),
        }
        if self.qa:  # only the task corpus has it (other manifests stay byte-identical)
            out["qa"] = [{**asdict(q), "key_words": list(q.key_words)} for q in self.qa]
        return out


@dataclass
class ManifestReport:
    """What :func:`read_manifest` returned: the good entries and, when skipping, the bad lines."""

    entries: list[DialogueEntry]
    skipped: list[str] = field(default_factory=list)  # "line N: problem"

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


def _num(obj: dict[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ManifestError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def _speaker(obj: dict[str, Any], where: str) -> str:
    speaker = obj.get("speaker")
    if speaker not in CHANNEL_OF:
        raise ManifestError(f"{where}: speaker must be 'assistant' or 'user', got {speaker!r}")
    return str(speaker)


def parse_entry(obj: Any, root: Path, where: str = "entry", *, check_audio: bool = True) -> DialogueEntry:
    """Validate one decoded JSON object and build its entry.

    Args:
        obj: the decoded line.
        root: directory relative ``audio`` paths are resolved against.
        where: prefix for error messages (``"manifest.jsonl line 3"``).
        check_audio: open the audio header and check it exists, is stereo, 24 kHz and as long as stated.

    Raises:
        ManifestError: naming ``where`` and the problem.
    """
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("id", "audio", "duration", "words"):
        if key not in obj:
            raise ManifestError(f"{where}: missing required field '{key}'")
    if not isinstance(obj["audio"], str) or not obj["audio"]:
        raise ManifestError(f"{where}: 'audio' must be a non-empty path string")
    audio = Path(obj["audio"])
    audio = audio if audio.is_absolute() else root / audio
    duration = _num(obj, "duration", where)
    if duration <= 0:
        raise ManifestError(f"{where}: duration must be positive, got {duration}")
    sample_rate = int(obj.get("sample_rate", SAMPLE_RATE))
    if sample_rate != SAMPLE_RATE:
        raise ManifestError(f"{where}: sample_rate {sample_rate} is not {SAMPLE_RATE}; resample the corpus")
    if check_audio:
        if not audio.is_file():
            raise ManifestError(f"{where}: audio file {audio} does not exist")
        try:
            info = sf.info(str(audio))
        except RuntimeError as exc:
            raise ManifestError(f"{where}: cannot read audio {audio}: {exc}") from exc
        if info.channels != 2:
            raise ManifestError(
                f"{where}: {audio} has {info.channels} channel(s), expected 2 (0 = assistant, 1 = user)"
            )
        if info.samplerate != SAMPLE_RATE:
            raise ManifestError(
                f"{where}: {audio} is sampled at {info.samplerate} Hz, expected {SAMPLE_RATE}; resample it"
            )
        if abs(info.frames / info.samplerate - duration) > _TOLERANCE_S:
            raise ManifestError(
                f"{where}: duration says {duration:.3f}s but {audio} holds"
                f" {info.frames / info.samplerate:.3f}s"
            )
    if not isinstance(obj["words"], list):
        raise ManifestError(f"{where}: 'words' must be a list")
    words = []
    for i, w in enumerate(obj["words"]):
        at = f"{where}: word {i}"
        if not isinstance(w, dict):
            raise ManifestError(f"{at}: expected an object with word/start/end/speaker")
        text = w.get("word")
        if not isinstance(text, str) or not text.strip():
            raise ManifestError(f"{at}: empty text")
        start, end = _num(w, "start", at), _num(w, "end", at)
        if start < 0 or end < start:
            raise ManifestError(f"{at} ('{text}'): bad interval {start:.3f}..{end:.3f}s")
        if end > duration + _TOLERANCE_S:
            raise ManifestError(
                f"{at} ('{text}'): alignment ends at {end:.3f}s, past the end of the audio ({duration:.3f}s)"
            )
        words.append(Word(text, start, end, _speaker(w, at)))
    if not words:
        raise ManifestError(f"{where}: no words: every conversation needs its transcript")
    turns = []
    for i, t in enumerate(obj.get("turns", [])):
        at = f"{where}: turn {i}"
        if not isinstance(t, dict) or not str(t.get("text", "")).strip():
            raise ManifestError(f"{at}: empty text")
        start, end = _num(t, "start", at), _num(t, "end", at)
        if start < 0 or end < start or end > duration + _TOLERANCE_S:
            raise ManifestError(f"{at}: interval {start:.3f}..{end:.3f}s is not inside 0..{duration:.3f}s")
        turns.append(Turn(_speaker(t, at), start, end, str(t["text"])))
    events = []
    for i, e in enumerate(obj.get("events", [])):
        at = f"{where}: event {i}"
        if not isinstance(e, dict) or e.get("kind") not in EVENT_KINDS:
            kind = e.get("kind") if isinstance(e, dict) else e
            raise ManifestError(f"{at}: kind must be one of {', '.join(EVENT_KINDS)}, got {kind!r}")
        start, end = _num(e, "start", at), _num(e, "end", at)
        if start < 0 or end > duration + _TOLERANCE_S:
            raise ManifestError(f"{at}: interval {start:.3f}..{end:.3f}s is not inside 0..{duration:.3f}s")
        events.append(Event(str(e["kind"]), start, end, dict(e.get("info") or {})))
    snr = obj.get("noise_snr_db")
    qa = _parse_qa(obj.get("qa", []), duration, where)
    return DialogueEntry(
        id=str(obj["id"]),
        audio=audio,
        duration=duration,
        words=tuple(sorted(words, key=lambda w: (w.start, w.speaker))),
        turns=tuple(sorted(turns, key=lambda t: t.start)),
        events=tuple(events),
        scenarios=tuple(str(s) for s in obj.get("scenarios", [])),
        split=str(obj.get("split", "train")),
        noise_snr_db=None if snr is None else float(snr),
        voices={str(k): str(v) for k, v in dict(obj.get("voices") or {}).items()},
        sample_rate=sample_rate,
        qa=qa,
    )


def _parse_qa(items: Any, duration: float, where: str) -> tuple[QA, ...]:
    if not isinstance(items, list):
        raise ManifestError(f"{where}: 'qa' must be a list")
    out = []
    for i, q in enumerate(items):
        at = f"{where}: qa {i}"
        if not isinstance(q, dict):
            raise ManifestError(f"{at}: expected an object")
        texts = [q.get(k) for k in ("category", "question", "answer")]
        keys = q.get("key_words")
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise ManifestError(f"{at}: category, question and answer must be non-empty strings")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
            raise ManifestError(f"{at}: key_words must be a non-empty list of strings")
        asked, start = _num(q, "asked_end", at), _num(q, "answer_start", at)
        if not 0 <= asked <= duration + _TOLERANCE_S or not 0 <= start <= duration + _TOLERANCE_S:
            raise ManifestError(f"{at}: times {asked:.3f} / {start:.3f}s are not inside 0..{duration:.3f}s")
        category, question, answer = (str(t) for t in texts)
        interrupted = bool(q.get("interrupted", False))
        out.append(QA(category, question, answer, tuple(keys), asked, start, interrupted))
    return tuple(out)


def read_manifest(
    path: str | os.PathLike[str], *, skip_bad: bool = False, check_audio: bool = True
) -> ManifestReport:
    """Read and validate a JSONL manifest.

    Args:
        path: the ``.jsonl`` file; relative audio paths are resolved against its directory.
        skip_bad: skip (and count) bad lines instead of raising on the first one.
        check_audio: also open each audio header (existence, 2 channels, 24 kHz, duration).

    Returns:
        The entries and the skipped lines' messages.

    Raises:
        ManifestError: the file is missing, or (without ``skip_bad``) a line is bad; the message reads
            ``"<path> line N: <problem>"``.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; generate one with `e2e-voice synth-data`")
    report = ManifestReport(entries=[])
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {n}"
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ManifestError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
                entry = parse_entry(obj, path.parent, where, check_audio=check_audio)
                if entry.id in seen:
                    raise ManifestError(f"{where}: duplicate id '{entry.id}'")
            except ManifestError as exc:
                if not skip_bad:
                    raise
                report.skipped.append(str(exc))
                continue
            seen.add(entry.id)
            report.entries.append(entry)
    return report


def write_manifest(path: str | os.PathLike[str], entries: list[DialogueEntry]) -> None:
    """Write entries as JSONL (atomically), with audio paths relative to the manifest's directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e.to_json(path.parent.resolve()), ensure_ascii=False) + "\n")
    tmp.replace(path)
