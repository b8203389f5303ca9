"""Manifest validation: every kind of bad line gets a message naming the line and the problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from e2e_voice.data.manifest import (
    CHANNEL_OF,
    DialogueEntry,
    ManifestError,
    Word,
    read_manifest,
    write_manifest,
)

FIXTURE = Path(__file__).parent / "fixtures" / "dialogues" / "manifest.jsonl"


def _wav(path: Path, seconds: float = 1.0, channels: int = 2, sr: int = 24000) -> Path:
    sf.write(str(path), np.zeros((round(seconds * sr), channels), np.float32), sr, subtype="PCM_16")
    return path


def _line(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "c1",
        "audio": "c1.wav",
        "duration": 1.0,
        "words": [{"word": "hello", "start": 0.1, "end": 0.4, "speaker": "user"}],
    }
    obj.update(over)
    return obj


def _write(tmp: Path, lines: list[str]) -> Path:
    path = tmp / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_line_reads_relative_audio(tmp_path: Path) -> None:
    _wav(tmp_path / "c1.wav")
    entries = read_manifest(_write(tmp_path, [json.dumps(_line())])).entries
    assert len(entries) == 1
    assert entries[0].audio == tmp_path / "c1.wav"
    assert entries[0].words[0] == Word("hello", 0.1, 0.4, "user")


BAD = [
    pytest.param(lambda d: "{not json", "not valid JSON", id="invalid-json"),
    pytest.param(lambda d: json.dumps(_line(audio="missing.wav")), "does not exist", id="missing-file"),
    pytest.param(
        lambda d: json.dumps(_line(audio=_wav(d / "mono.wav", channels=1).name)), "1 channel(s)", id="mono"
    ),
    pytest.param(
        lambda d: json.dumps(_line(audio=_wav(d / "sr.wav", sr=16000).name)), "16000 Hz", id="wrong-rate"
    ),
    pytest.param(
        lambda d: json.dumps(_line(words=[{"word": "hi", "start": 0.5, "end": 1.5, "speaker": "user"}])),
        "past the end of the audio",
        id="alignment-past-end",
    ),
    pytest.param(
        lambda d: json.dumps(_line(words=[{"word": " ", "start": 0.1, "end": 0.2, "speaker": "user"}])),
        "empty text",
        id="empty-word",
    ),
    pytest.param(lambda d: json.dumps(_line(words=[])), "no words", id="no-words"),
    pytest.param(
        lambda d: json.dumps(_line(words=[{"word": "hi", "start": 0.1, "end": 0.2, "speaker": "bob"}])),
        "speaker must be",
        id="bad-speaker",
    ),
    pytest.param(lambda d: json.dumps(_line(duration=2.0)), "duration says 2.000s", id="wrong-duration"),
    pytest.param(
        lambda d: json.dumps({k: v for k, v in _line().items() if k != "audio"}),
        "missing required field 'audio'",
        id="missing-field",
    ),
    pytest.param(
        lambda d: json.dumps(_line(events=[{"kind": "nap", "start": 0, "end": 1}])),
        "kind must be one of",
        id="bad-event",
    ),
]


@pytest.mark.parametrize(("make", "message"), BAD)
def test_bad_line_names_line_and_problem(tmp_path: Path, make: Any, message: str) -> None:
    _wav(tmp_path / "c1.wav")
    good = json.dumps(_line(id="c0"))
    path = _write(tmp_path, [good, make(tmp_path)])
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert f"{path} line 2:" in str(err.value)
    assert message in str(err.value)
    report = read_manifest(path, skip_bad=True)
    assert [e.id for e in report.entries] == ["c0"]
    assert report.num_skipped == 1 and message in report.skipped[0]


def test_duplicate_id_and_missing_manifest(tmp_path: Path) -> None:
    _wav(tmp_path / "c1.wav")
    path = _write(tmp_path, [json.dumps(_line()), json.dumps(_line())])
    with pytest.raises(ManifestError, match="line 2: duplicate id 'c1'"):
        read_manifest(path)
    with pytest.raises(ManifestError, match="synth-data"):
        read_manifest(tmp_path / "nope.jsonl")


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    _wav(tmp_path / "audio.wav")
    entry = DialogueEntry(
        id="x", audio=tmp_path / "audio.wav", duration=1.0, words=(Word("hi", 0.1, 0.3, "assistant"),)
    )
    write_manifest(tmp_path / "sub" / "m.jsonl", [entry])
    line = json.loads((tmp_path / "sub" / "m.jsonl").read_text())
    assert line["audio"] == "../audio.wav"  # relative to the manifest's directory
    back = read_manifest(tmp_path / "sub" / "m.jsonl").entries[0]
    assert back.audio.resolve() == entry.audio.resolve() and back.words == entry.words


def test_fixture_is_valid_and_relocatable(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE.parent, tmp_path / "moved")
    for path in (FIXTURE, tmp_path / "moved" / "manifest.jsonl"):
        entries = read_manifest(path).entries
        assert len(entries) >= 3
        tags = {t for e in entries for t in e.scenarios}
        assert {"smooth", "pause", "interruption", "backchannel", "noise"} <= tags, tags
        for e in entries:
            info = sf.info(str(e.audio))
            assert (info.channels, info.samplerate) == (2, 24000)
            assert set(CHANNEL_OF) == {w.speaker for w in e.words}
    size = sum(p.stat().st_size for p in FIXTURE.parent.rglob("*") if p.is_file())
    assert size < 2_000_000, size  # the bound: < 2 MB (decimal), files only


def test_moshi_finetune_round_trip(tmp_path: Path) -> None:
    from e2e_voice.data.convert import from_moshi_finetune, to_moshi_finetune

    entry = read_manifest(FIXTURE).entries[0]
    wav = tmp_path / "call.wav"
    data, sr = sf.read(str(entry.audio), dtype="int16")
    sf.write(str(wav), data, sr, subtype="PCM_16")
    wav.with_suffix(".json").write_text(json.dumps(to_moshi_finetune(entry)))
    back = from_moshi_finetune(wav, entry.duration)
    assert back.words == entry.words
    wav.with_suffix(".json").write_text(json.dumps({"alignments": [["hi", 0.1, "SPEAKER_MAIN"]]}))
    with pytest.raises(ManifestError, match="alignment 0 is not"):
        from_moshi_finetune(wav, entry.duration)
