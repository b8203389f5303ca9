"""Consent-gated custom voices: a voice the project did not ship is usable only once registered.

A registration records who gave consent, when, their statement, and the sha256 of the reference audio or
voice file, in a plain JSON file (default ``<cache>/voices/consent.json``, or ``$E2E_VOICE_CONSENT``) that
survives restarts and is validated when loaded: a damaged file stops the program at start-up with the
path and the problem, never mid-conversation.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from e2e_voice.assets.registry import cache_dir, sha256_file

CONSENT_ENV = "E2E_VOICE_CONSENT"
REGISTER_HINT = (
    "register it with consent first: e2e-voice voices register FILE --name NAME --who 'Full Name'"
    " --statement 'I consent to ...'"
)


class ConsentError(RuntimeError):
    """A custom voice without a valid consent record, or a damaged consent file."""


@dataclass(frozen=True)
class ConsentRecord:
    name: str
    who: str
    when: str  # ISO 8601, UTC
    statement: str
    sha256: str
    source: str  # the file that was registered (informational; the hash is what counts)

    def validate(self) -> None:
        for field in ("name", "who", "when", "statement", "sha256", "source"):
            if not isinstance(getattr(self, field), str):
                raise ValueError(f"'{field}' must be a string, got {type(getattr(self, field)).__name__}")
        for field in ("name", "who", "when", "statement", "sha256"):
            if not getattr(self, field).strip():
                raise ValueError(f"'{field}' is empty")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"sha256 '{self.sha256}' is not 64 lowercase hex digits")
        dt.datetime.fromisoformat(self.when)


def check_voice_file(path: Path) -> None:
    """Refuse to record consent for a file that holds no voice: a 0-byte file, a text file, a pack that
    is not a numeric array. A voice is reference audio (any format :func:`load_audio` reads, with samples)
    or a voice pack (``.npy``, e.g. Kokoro's ``[510, 1, 256]``)."""
    import numpy as np

    from e2e_voice.audio.io import AudioError, load_audio

    what = "reference audio (.wav/.flac/.ogg) or a voice pack (.npy)"
    if path.stat().st_size == 0:
        raise ConsentError(f"voice file {path} is empty (0 bytes); register {what}")
    if path.suffix.lower() == ".npy":
        try:
            pack = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConsentError(f"voice file {path} is not a readable .npy voice pack ({exc})") from exc
        if pack.dtype.kind != "f" or pack.ndim not in (2, 3) or pack.size == 0:
            raise ConsentError(
                f"voice file {path} holds a {pack.dtype} array of shape {pack.shape}, not a voice pack"
                " (floats, e.g. [510, 1, 256])"
            )
        return
    try:
        load_audio(path, sample_rate=None)
    except AudioError as exc:
        raise ConsentError(f"voice file {path} is not {what}: {exc}") from exc


def consent_path() -> Path:
    return Path(os.environ.get(CONSENT_ENV) or cache_dir() / "voices" / "consent.json")


class ConsentRegistry:
    """The consent records, loaded and validated from ``path``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or consent_path()
        self.records: dict[str, ConsentRecord] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except RecursionError as exc:  # nested deeper than the parser's stack
            raise ConsentError(
                f"consent file {self.path} is nested too deeply to be one; fix or remove it"
            ) from exc
        except (OSError, ValueError) as exc:
            raise ConsentError(f"consent file {self.path} is unreadable ({exc}); fix or remove it") from exc
        if not isinstance(data, dict) or not isinstance(data.get("voices"), list):
            raise ConsentError(f"consent file {self.path} must hold {{'voices': [...]}}")
        for i, raw in enumerate(data["voices"]):
            try:
                if not isinstance(raw, dict):
                    raise TypeError(f"expected an object with the record's fields, got {type(raw).__name__}")
                record = ConsentRecord(**raw)
                record.validate()
            except (TypeError, ValueError) as exc:
                raise ConsentError(f"consent file {self.path}, voice #{i}: {exc}") from exc
            self.records[record.sha256] = record

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"voices": [asdict(r) for r in self.records.values()]}, indent=2))
        tmp.replace(self.path)

    def register(self, voice_file: str | Path, name: str, who: str, statement: str) -> ConsentRecord:
        """Record consent for the voice in ``voice_file`` (reference audio or a voice pack)."""
        p = Path(voice_file)
        if not p.is_file():
            raise ConsentError(f"voice file {p} does not exist")
        check_voice_file(p)
        record = ConsentRecord(
            name=name,
            who=who,
            when=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            statement=statement,
            sha256=sha256_file(p),
            source=str(p.resolve()),
        )
        try:
            record.validate()
        except ValueError as exc:
            raise ConsentError(f"cannot register {p}: {exc}") from exc
        self.records[record.sha256] = record
        self._save()
        return record

    def require(self, voice_file: str | Path) -> ConsentRecord:
        """Return the consent record of ``voice_file``, or raise ConsentError saying how to register it."""
        p = Path(voice_file)
        if not p.is_file():
            raise ConsentError(f"custom voice {p} does not exist")
        record = self.records.get(sha256_file(p))
        if record is None:
            raise ConsentError(f"custom voice {p} has no consent record; {REGISTER_HINT}")
        return record
