from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from e2e_voice.audio.io import AudioError, load_audio, resample, save_audio


def test_roundtrip_and_resample(tmp_path: Path) -> None:
    t = np.arange(16_000) / 16_000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(tmp_path / "a.wav", tone, 16_000)
    audio = load_audio(tmp_path / "a.wav")  # -> 24 kHz
    assert audio.shape == (1, 24_000)
    spectrum = np.abs(np.fft.rfft(audio[0]))
    assert abs(np.argmax(spectrum) * 24_000 / audio.shape[1] - 440) < 2
    save_audio(tmp_path / "b.wav", audio)
    again = load_audio(tmp_path / "b.wav")
    assert np.abs(again - audio).max() < 1e-3


def test_stereo_mixdown_and_keep(tmp_path: Path) -> None:
    stereo = np.stack([np.full(2400, 0.2), np.full(2400, -0.2)], axis=1).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 24_000)
    assert load_audio(tmp_path / "s.wav").shape == (1, 2400)
    kept = load_audio(tmp_path / "s.wav", mono=False)
    assert kept.shape == (2, 2400)
    assert kept[0].mean() == pytest.approx(0.2, abs=1e-3)


@pytest.mark.parametrize(
    "content, message",
    [
        pytest.param(None, "does not exist", id="missing"),
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"RIFF\x00\x00garbage-not-a-wav", "cannot read", id="corrupt"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    p = tmp_path / "bad.wav"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(AudioError, match=message):
        load_audio(p)


def test_zero_samples(tmp_path: Path) -> None:
    sf.write(tmp_path / "z.wav", np.zeros(0, np.float32), 24_000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(tmp_path / "z.wav")


def test_nan_samples(tmp_path: Path) -> None:
    sf.write(tmp_path / "n.wav", np.array([0.0, np.nan, 0.1], np.float32), 24_000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(tmp_path / "n.wav")


def test_bad_rate() -> None:
    with pytest.raises(AudioError, match="positive"):
        resample(np.zeros(10, np.float32), 0, 24_000)
