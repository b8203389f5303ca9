"""Watermarking (Perth, our torch.stft rebuild of PerthNet) and consent-gated voices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from e2e_voice.audio.io import save_audio
from e2e_voice.audio.opus import opus_roundtrip
from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.safety.consent import ConsentError, ConsentRegistry
from e2e_voice.safety.watermark import PerthWatermarker, StreamingWatermarker, WatermarkedSystem
from e2e_voice.serve.loopback import LoopbackSystem
from tests.helpers import espeak_speech

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wm() -> PerthWatermarker:
    return PerthWatermarker()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from e2e_voice.tts.kokoro import KokoroTTS

    return KokoroTTS().synthesize("The weather is nice today, so we should go for a walk in the park.")


def test_embed_then_detect(wm: PerthWatermarker, speech: np.ndarray) -> None:
    marked = wm.embed(speech, SAMPLE_RATE)
    assert marked.shape == speech.shape
    assert wm.detect(marked, SAMPLE_RATE).present
    assert not wm.detect(speech, SAMPLE_RATE).present
    assert not wm.detect(espeak_speech("A clean recording of somebody else entirely."), SAMPLE_RATE).present
    # Imperceptible is a perceptual claim; the signal-to-watermark ratio at least bounds the change.
    snr = 10 * np.log10(np.sum(speech**2) / np.sum((speech - marked) ** 2))
    assert snr > 10, snr


def test_detection_survives_opus(wm: PerthWatermarker, speech: np.ndarray) -> None:
    marked = wm.embed(speech, SAMPLE_RATE)
    assert wm.detect(opus_roundtrip(marked), SAMPLE_RATE).present
    assert not wm.detect(opus_roundtrip(speech), SAMPLE_RATE).present


def _stream(wm: PerthWatermarker, x: np.ndarray) -> np.ndarray:
    s = StreamingWatermarker(wm)
    frames = [s.step(x[i : i + FRAME_SIZE]) for i in range(0, len(x), FRAME_SIZE)]
    return np.concatenate([*frames, s.flush()])


def test_streaming_adds_one_frame_and_marks(wm: PerthWatermarker, speech: np.ndarray) -> None:
    x = speech[: len(speech) // FRAME_SIZE * FRAME_SIZE]
    y = _stream(wm, x)
    assert np.all(y[:FRAME_SIZE] == 0)  # the first call has nothing to return yet
    aligned = y[FRAME_SIZE:]
    lags = range(0, 3 * FRAME_SIZE, 160)
    best = max(lags, key=lambda k: float(np.dot(aligned[k : k + len(x) // 2], x[: len(x) // 2])))
    assert best == 0  # exactly one frame of delay: no more, no less
    assert wm.detect(aligned, SAMPLE_RATE).present


def test_streaming_is_causal(wm: PerthWatermarker, speech: np.ndarray) -> None:
    x = speech[: 20 * FRAME_SIZE].copy()
    x2 = x.copy()
    x2[12 * FRAME_SIZE :] = np.random.default_rng(0).normal(0, 0.1, 8 * FRAME_SIZE)
    y, y2 = _stream(wm, x), _stream(wm, x2)
    # Output frame k (returned at step k+1) may look one frame ahead, never further.
    np.testing.assert_array_equal(y[: 12 * FRAME_SIZE], y2[: 12 * FRAME_SIZE])
    assert not np.array_equal(y[12 * FRAME_SIZE :], y2[12 * FRAME_SIZE :])


def test_watermarked_system_delays_audio_and_text_together(wm: PerthWatermarker) -> None:
    inner = LoopbackSystem(delay_frames=0, text_every=1)
    system = WatermarkedSystem(inner, wm)
    frames = [np.full(FRAME_SIZE, 0.1 * (i + 1), np.float32) for i in range(4)]
    outs = [system.step(f) for f in frames]
    assert outs[0].text == "" and outs[1].text == " 1" and outs[2].text == " 2"


def test_unregistered_voice_refused_registered_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from e2e_voice.tts.kokoro import KokoroTTS

    monkeypatch.setenv("E2E_VOICE_CONSENT", str(tmp_path / "consent.json"))
    base = KokoroTTS()
    pack = tmp_path / "my_voice.npy"
    np.save(pack, 0.5 * base.voices["jm_kumo"] + 0.5 * base.voices["jf_gongitsune"])
    with pytest.raises(ConsentError, match="no consent record; register it"):
        KokoroTTS(voice_file=str(pack))
    ConsentRegistry().register(pack, name="blend", who="Test Person", statement="I consent to tests.")
    tts = KokoroTTS(voice_file=str(pack))  # a new registry read: the record survived on disk
    assert tts.voice == "custom:blend"
    assert np.abs(tts.synthesize("Hello there.")).max() > 0.01


@pytest.mark.parametrize(
    "content, message",
    [
        pytest.param("{not json", "unreadable", id="bad-json"),
        pytest.param('{"voices": {}}', "must hold", id="bad-shape"),
        pytest.param(json.dumps({"voices": [{"name": "x"}]}), "voice #0", id="missing-fields"),
        pytest.param(
            json.dumps(
                {
                    "voices": [
                        {
                            "name": "x",
                            "who": "y",
                            "when": "2026-01-01T00:00:00+00:00",
                            "statement": "s",
                            "sha256": "abc",
                            "source": "f",
                        }
                    ]
                }
            ),
            "64 lowercase hex",
            id="bad-hash",
        ),
    ],
)
def test_corrupt_consent_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "consent.json"
    path.write_text(content)
    with pytest.raises(ConsentError, match=message):
        ConsentRegistry(path)


def test_detect_cli(wm: PerthWatermarker, speech: np.ndarray, tmp_path: Path) -> None:
    save_audio(tmp_path / "marked.wav", wm.embed(speech, SAMPLE_RATE))
    save_audio(tmp_path / "clean.wav", speech)
    cmd = [sys.executable, "-m", "e2e_voice.cli", "watermark", "detect"]
    ok = subprocess.run(
        [*cmd, str(tmp_path / "marked.wav"), str(tmp_path / "clean.wav")], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()[1:]
    assert " yes " in lines[0] and " no " in lines[1]
    (tmp_path / "broken.wav").write_bytes(b"RIFFnope")
    bad = subprocess.run([*cmd, str(tmp_path / "broken.wav")], capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot read" in bad.stderr


def test_converse_output_is_watermarked_and_opt_out_is_logged(tmp_path: Path) -> None:
    user = tmp_path / "user.wav"
    save_audio(user, espeak_speech("Hello there, this is a recorded user turn for the loopback system."))
    base = [sys.executable, "-m", "e2e_voice.cli", "converse", "--input", str(user)]
    marked = subprocess.run(
        [*base, "--output", str(tmp_path / "on.wav"), "system=loopback"], capture_output=True, text=True
    )
    assert marked.returncode == 0, marked.stderr
    off = subprocess.run(
        [*base, "--output", str(tmp_path / "off.wav"), "system=loopback", "watermark.enabled=false"],
        capture_output=True,
        text=True,
    )
    assert off.returncode == 0 and "watermarking is DISABLED" in off.stderr
    detect = subprocess.run(
        [
            sys.executable,
            "-m",
            "e2e_voice.cli",
            "watermark",
            "detect",
            str(tmp_path / "on.wav"),
            str(tmp_path / "off.wav"),
        ],
        capture_output=True,
        text=True,
    )
    rows = {
        line.split()[0] + " " + line.split()[1]: line.split()[2] for line in detect.stdout.splitlines()[1:]
    }
    assert rows[f"{tmp_path / 'on.wav'} [ch0]"] == "yes"  # the assistant channel
    assert rows[f"{tmp_path / 'on.wav'} [ch1]"] == "no"  # the user's own voice is not marked
    assert rows[f"{tmp_path / 'off.wav'} [ch0]"] == "no"


def test_synth_data_can_watermark_the_assistant_channel(tmp_path: Path, wm: PerthWatermarker) -> None:
    from e2e_voice.audio.io import load_audio
    from e2e_voice.data.manifest import read_manifest

    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "e2e_voice.cli",
            "synth-data",
            "num_conversations=1",
            "workers=1",
            "exchanges=[2,2]",
            "assistant.engine=piper",
            "assistant.voice=piper-en-us-joe",
            "users.kokoro.weight=0",
            "users.piper.weight=0",
            "content.source=templates",
            "alignment.method=concat",
            "scenarios.noise_prob=0",
            "watermark_assistant=true",
            f"out_dir={out}",
            f"cache.dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    entries = [e for s in ("train", "valid", "test") for e in read_manifest(out / f"{s}.jsonl").entries]
    audio = load_audio(entries[0].audio, mono=False)
    assert wm.detect(audio[0], SAMPLE_RATE).present  # the generated assistant voice
    assert not wm.detect(audio[1], SAMPLE_RATE).present  # the simulated user
