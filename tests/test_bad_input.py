"""Bad input to the CLI: a clear error and a non-zero exit, never a raw traceback, and no file lost or
overwritten (issue #45). Each command runs in-process through ``e2e_voice.cli.main``, as the console
script does; the inputs' bytes are compared before and after."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from e2e_voice import cli
from e2e_voice.constants import SAMPLE_RATE

RECORD = {
    "name": "x",
    "who": "y",
    "when": "2026-01-01T00:00:00+00:00",
    "statement": "s",
    "sha256": "a" * 64,
    "source": "f",
}


@pytest.fixture()
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A speech-length wav, a 1-sample wav, an empty and a text file, and a consent file per case."""
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "in.wav", (0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32), SAMPLE_RATE)
    sf.write(tmp_path / "one.wav", np.zeros(1, np.float32), SAMPLE_RATE)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a voice\n")
    (tmp_path / "corrupt.json").write_text("{not json")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "nonstr.json").write_text(json.dumps({"voices": [{**RECORD, "name": 5, "statement": 7}]}))
    monkeypatch.setenv("E2E_VOICE_CONSENT", str(tmp_path / "consent.json"))
    monkeypatch.setattr(sys, "argv", ["e2e-voice"])

    def no_server(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server started despite the bad input")

    monkeypatch.setattr("e2e_voice.serve.app.run_server", no_server)  # a regression fails, not hangs
    return {p.name: p for p in tmp_path.iterdir()}


REGISTER = ["--name", "a", "--who", "b", "--statement", "c"]
# (argv with {tmp} for the folder, consent file to use or None, what the error must say)
CASES = [
    (["watermark", "embed", "{tmp}/one.wav", "{tmp}/marked.wav"], None, "more than 32 ms"),
    (["watermark", "embed", "{tmp}/in.wav", "{tmp}/in.wav"], None, "is the input"),
    (["codec", "encode", "{tmp}/in.wav", "--checkpoint", "{tmp}/in.wav"], None, "as a codec"),
    (["codec", "encode", "{tmp}/in.wav", "-o", "/proc/x.codes.safetensors"], None, "cannot write"),
    (["converse", "--input", "{tmp}/in.wav", "--output", "{tmp}/out.json"], None, "name the audio file"),
    (["converse", "--input", "{tmp}/in.wav", "--output", "{tmp}/in.wav"], None, "overwrite the input"),
    (["converse", "--input", "{tmp}/in.wav", "--output", "{tmp}/o.wav", "foo=1"], None, r"\+foo=1"),
    (["train-lm", "lm_train.resume={tmp}/in.wav", "out_dir={tmp}/lm"], None, "lm_train.resume=false"),
    (["train-lm", "train.stepz=3", "out_dir={tmp}/lm"], None, r"\+train.stepz=3"),
    (["train-lm", "train.steps=[", "out_dir={tmp}/lm"], None, "key=value"),
    (["train-lm", "+experiment=nope", "out_dir={tmp}/lm"], None, "choose one of: .*lm_tiny_cpu"),
    (["train-lm", "train.steps=-5", "out_dir={tmp}/lm"], None, "whole number >= 1"),
    (["train-codec", "train.steps=1.5", "hydra.run.dir={tmp}/codec"], None, "whole number >= 1"),
    (["serve", "serve.max_conversations=1.5"], None, "whole number"),
    (["serve", "system=cascade"], "corrupt.json", "unreadable"),
    (["voices", "list"], "deep.json", "nested too deeply"),
    (["voices", "list"], "nonstr.json", "'name' must be a string"),
    (
        ["voices", "register", "{tmp}/empty.wav", "--name", "a", "--who", "b", "--statement", "c"],
        None,
        "0 bytes",
    ),
    (["voices", "register", "{tmp}/notes.txt", "--name", "a", "--who", "b", "--statement", "c"], None, "not"),
]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize(("argv", "consent", "message"), CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_bad_input_is_one_error_not_a_traceback(
    files: dict[str, Path],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    consent: str | None,
    message: str,
) -> None:
    if consent:
        monkeypatch.setenv("E2E_VOICE_CONSENT", str(files[consent]))
    before = _digests(tmp_path)
    code = cli.main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    out, err = capfd.readouterr()
    assert code != 0, out + err
    assert "Traceback" not in out + err, err
    assert re.search(message, err), err
    after = _digests(tmp_path)
    assert {k: after.get(k) for k in before} == before  # every file there before is there, unchanged
    assert set(after) == set(before)  # and nothing was written beside them
