"""``e2e-voice codec`` and the codes files it writes (``e2e_voice.codec.files``), on the committed codec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from e2e_voice.assets.registry import CACHE_ENV, sha256_file
from e2e_voice.audio.io import load_audio, resample
from e2e_voice.codec import load_codec
from e2e_voice.codec.cli import main
from e2e_voice.codec.files import (
    Codes,
    CodesFileError,
    decode_codes,
    encode_audio,
    load_codes,
    save_codes,
)
from e2e_voice.constants import FRAME_SIZE, REPO_ROOT

CODEC = REPO_ROOT / "checkpoints/codec_cpu/codec.safetensors"
FIXTURE = sorted((REPO_ROOT / "tests/fixtures/dialogues/audio").glob("*.flac"))[0]


@pytest.fixture(scope="module")
def codec():  # type: ignore[no-untyped-def]
    return load_codec(CODEC)


@pytest.fixture(scope="module")
def stereo() -> np.ndarray:
    """4 s of a fixture conversation, both channels (assistant and user) at 24 kHz, [2, T]."""
    audio = load_audio(FIXTURE, mono=False)
    return audio[:, 24_000 : 24_000 + 4 * 24_000 + 700]  # not a whole number of frames


def test_codes_file_round_trip(tmp_path: Path) -> None:
    codes = torch.randint(0, 1024, (2, 8, 13))
    written = Codes(codes, 24_000, 24_000, 12.5, 1024, "ab" * 32, "x.safetensors", "a.wav", 16_000, "keep")
    path = save_codes(tmp_path / "new" / "a.codes.safetensors", written)  # folders are made
    read = load_codes(path)
    assert torch.equal(read.codes, codes) and read.codes.dtype == torch.long
    assert (read.num_samples, read.source_sample_rate, read.channels) == (24_000, 16_000, "keep")
    assert read.codec_sha256 == "ab" * 32 and read.seconds == 1.0 and read.bitrate == 8 * 10 * 12.5
    assert path.stat().st_size < 13 * 8 * 2 * 2 + 2_000  # stored as int16


def test_codes_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CodesFileError, match="does not exist"):
        load_codes(tmp_path / "missing.codes.safetensors")
    bad = tmp_path / "bad.codes.safetensors"
    bad.write_bytes(b"not safetensors at all")
    with pytest.raises(CodesFileError, match="cannot read"):
        load_codes(bad)
    with pytest.raises(CodesFileError, match="codec checkpoint"):
        load_codes(CODEC)


@torch.no_grad()
def test_long_clips_stream_to_the_same_codes_and_audio(codec, stereo: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Past ``max_whole_seconds`` the clip streams frame by frame: the same codes, the same audio."""
    whole = encode_audio(codec, stereo)
    streamed = encode_audio(codec, stereo, max_whole_seconds=0)
    assert whole.shape == (2, 8, -(-stereo.shape[-1] // FRAME_SIZE))
    assert torch.equal(whole, streamed)
    a = decode_codes(codec, whole, stereo.shape[-1])
    b = decode_codes(codec, whole, stereo.shape[-1], max_whole_seconds=0)
    assert a.shape == b.shape == stereo.shape
    np.testing.assert_allclose(a, b, atol=1e-4)
    # Each channel is coded on its own: the same as encoding it alone.
    assert torch.equal(whole[1:], encode_audio(codec, stereo[1:]))


def test_roundtrip_keeps_channels_and_rate(tmp_path: Path, codec, stereo: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """A 16 kHz stereo file: codes per channel, decoded back at the source rate, same length."""
    src = tmp_path / "talk.wav"
    at16 = resample(stereo, 24_000, 16_000)
    sf.write(src, at16.T, 16_000)
    assert main(["encode", str(src), "--channels", "keep", "--no-progress"]) == 0
    codes_path = tmp_path / "talk.codes.safetensors"
    codes = load_codes(codes_path)
    assert codes.codes.shape[:2] == (2, 8) and codes.source_sample_rate == 16_000
    assert main(["decode", str(codes_path), "--sample-rate", "source", "--no-progress"]) == 0
    out, sr = sf.read(tmp_path / "talk.decoded.wav", always_2d=True)
    assert sr == 16_000 and out.shape[1] == 2 and abs(out.shape[0] - at16.shape[-1]) <= 1
    # The decoded speech is the codec's reconstruction, not silence or noise: it follows the input.
    direct = decode_codes(codec, encode_audio(codec, load_audio(src, mono=False)), codes.num_samples)
    np.testing.assert_allclose(resample(direct, 24_000, 16_000)[:, : out.shape[0]].T, out, atol=2e-4)
    assert main(["roundtrip", str(src), "-o", str(tmp_path / "r.wav"), "--no-progress"]) == 0
    mono, sr = sf.read(tmp_path / "r.wav", always_2d=True)
    assert sr == 24_000 and mono.shape[1] == 1


def test_info_prints_what_the_file_holds(tmp_path: Path, stereo: np.ndarray, capsys) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "a.flac"
    sf.write(src, stereo.T, 24_000)
    assert main(["encode", str(src), "--num-codebooks", "4", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "a.codes.safetensors")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["codebooks"] == 4 and info["channels"] == 1 and info["bitrate_bps"] == 500.0
    assert info["seconds"] == round(stereo.shape[-1] / 24_000, 3) and info["source"] == "a.flac"
    assert info["kind"] == "codes" and info["codec_sha256"] == sha256_file(CODEC)  # what `info CODEC` prints


def test_info_describes_a_codec_checkpoint(codec, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["info", str(CODEC)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "codec" and info["sha256"] == sha256_file(CODEC)
    assert (info["codebooks"], info["semantic_codebooks"], info["frame_size"]) == (8, 1, FRAME_SIZE)
    assert info["bitrate_bps"] == 8 * 10 * 12.5
    assert info["parameters"] == sum(p.numel() for p in codec.parameters())
    assert info["architecture"]["frontend"] == "spectral"


def test_bad_inputs_are_reported_and_the_rest_go_on(tmp_path: Path, stereo: np.ndarray, capsys) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.wav"
    sf.write(good, stereo[0], 24_000)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    assert main(["encode", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "empty.wav is empty" in err and "cannot read" in err and "2 of 3 inputs failed" in err
    assert (tmp_path / "good.codes.safetensors").is_file()
    assert not (tmp_path / "empty.codes.safetensors").exists()
    # An existing output is never replaced without --overwrite.
    before = (tmp_path / "good.codes.safetensors").read_bytes()
    assert main(["encode", str(good), "--no-progress"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "good.codes.safetensors").read_bytes() == before


def test_codes_from_another_codec_are_refused(tmp_path: Path, stereo: np.ndarray, capsys) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "a.wav"
    sf.write(src, stereo[0], 24_000)
    assert main(["encode", str(src), "--no-progress"]) == 0
    path = tmp_path / "a.codes.safetensors"
    codes = load_codes(path)
    codes.codec_sha256 = "0" * 64  # as if another codec file had made them
    save_codes(path, codes)
    capsys.readouterr()
    assert main(["decode", str(path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "codes only mean something to their own codec" in err and "--ignore-codec-mismatch" in err
    assert not (tmp_path / "a.decoded.wav").exists()
    assert main(["decode", str(path), "--ignore-codec-mismatch", "--no-progress"]) == 0
    assert (tmp_path / "a.decoded.wav").is_file()


def test_bad_options_say_what_is_wrong(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "a.wav"
    sf.write(src, np.zeros(4800, dtype=np.float32), 24_000)  # silence is valid input
    with pytest.raises(SystemExit):
        main(["decode", str(src), "--sample-rate", "fast"])
    assert "--sample-rate must be" in capsys.readouterr().err
    assert main(["encode", str(src), "--checkpoint", str(tmp_path / "nope.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    monkeypatch.delenv("E2E_VOICE_ALLOW_HUB", raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "empty_cache"))  # no local copy of Kyutai's Mimi
    assert main(["encode", str(src), "--checkpoint", "mimi-kyutai"]) == 2  # offline: not in the bundle
    assert "E2E_VOICE_ALLOW_HUB" in capsys.readouterr().err
    assert main(["encode", str(src), "--no-progress"]) == 0
