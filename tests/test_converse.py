"""``converse``: generic over DuplexSystem (a tiny echo system tests the loop), and the CLI on the cascade."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from e2e_voice import cli
from e2e_voice.audio.io import save_audio
from e2e_voice.constants import CONFIG_DIR, FRAME_SIZE, SAMPLE_RATE
from e2e_voice.converse import converse
from e2e_voice.system import DuplexSystem, SystemOutput
from tests.helpers import espeak_speech


class EchoSystem(DuplexSystem):
    """Repeats the user's audio ``delay`` frames later (a stand-in to test the converse loop only)."""

    def __init__(self, delay: int = 3) -> None:
        self.delay = delay
        self.reset()

    def reset(self) -> None:
        self.queue: list[np.ndarray] = [np.zeros(FRAME_SIZE, np.float32)] * self.delay
        self.steps = 0

    def step(self, user_frame: np.ndarray) -> SystemOutput:
        self.queue.append(self.check_frame(user_frame))
        self.steps += 1
        out = self.queue.pop(0)
        return SystemOutput(out, text="hi" if self.steps == 1 else "", events={"tick": self.steps * 0.08})

    def busy(self) -> bool:
        return any(np.any(f) for f in self.queue)


def test_converse_loop_two_channels_and_tail() -> None:
    user = np.random.default_rng(0).uniform(-0.5, 0.5, FRAME_SIZE * 10 + 100).astype(np.float32)
    result = converse(EchoSystem(delay=3), user, realtime=False, quiet_s=0.16, progress=False)
    c, t = result.audio.shape
    assert c == 2 and t % FRAME_SIZE == 0
    assert t >= FRAME_SIZE * (11 + 3)  # the echo of the last (padded) frame is heard to the end
    np.testing.assert_array_equal(result.audio[1, : len(user)], user)
    np.testing.assert_array_equal(result.audio[0, 3 * FRAME_SIZE : 3 * FRAME_SIZE + len(user)], user)
    assert not np.any(result.audio[0, : 3 * FRAME_SIZE])
    assert result.events[0].kind == "assistant_text" and result.events[0].text == "hi"
    assert [e.time for e in result.events] == sorted(e.time for e in result.events)
    json.dumps(result.to_json())


@pytest.mark.parametrize(
    "audio, match",
    [
        pytest.param(np.zeros(0, np.float32), "non-empty", id="empty"),
        pytest.param(np.zeros((2, 4000), np.float32), "mono", id="stereo"),
    ],
)
def test_converse_bad_input(audio: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        converse(EchoSystem(), audio, progress=False)


def test_converse_config_picks_system_by_target() -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("converse", overrides=["cascade/tts=piper", "cascade/llm=openai"])
    assert cfg.system._target_ == "cascade_baseline.builders.build_cascade"
    assert cfg.cascade.tts._target_ == "e2e_voice.tts.piper.PiperTTS"
    assert cfg.cascade.llm.base_url.startswith("http")
    assert cfg.realtime is False and cfg.system.realtime is True  # converse overrides the live default


def test_server_config_can_pick_the_cascade() -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("serve", overrides=["system=cascade", "cascade/tts=piper"])
    assert cfg.system.cascade.tts._target_ == "e2e_voice.tts.piper.PiperTTS"
    assert cfg.system.realtime is True  # a server must never wait for the answer inside step()


def test_missing_stt_model_names_the_setting() -> None:
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("converse", overrides=["cascade.stt.model_path=/nonexistent/whisper"])
    with pytest.raises(Exception, match=r"cascade\.stt\.model_path") as info:
        instantiate(cfg.system)
    assert "/nonexistent/whisper" in str(info.value)


def test_cli_rejects_corrupt_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "user.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    # A clear message and exit code 2, not a traceback; nothing is written.
    assert cli.main(["converse", "--input", str(bad), "--output", str(tmp_path / "out.wav")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.slow
def test_cli_two_turns_on_the_cascade(tmp_path: Path) -> None:
    def sentence(text: str) -> np.ndarray:
        a = espeak_speech(text)
        loud = np.flatnonzero(np.abs(a) > 0.01)
        return a[loud[0] : loud[-1] + 1]

    silence = [np.zeros(int(s * SAMPLE_RATE), np.float32) for s in (0.5, 4.5, 1.0)]
    q1, q2 = sentence("What is the capital of France?"), sentence("What color is the sky?")
    user = np.concatenate([silence[0], q1, silence[1], q2, silence[2]])
    ends = [(len(silence[0]) + len(q1)) / SAMPLE_RATE, (len(user) - len(silence[2])) / SAMPLE_RATE]
    second_start = ends[0] + len(silence[1]) / SAMPLE_RATE
    save_audio(tmp_path / "user.wav", user)
    out = tmp_path / "out.wav"
    code = cli.main(
        [
            "converse",
            "--input",
            str(tmp_path / "user.wav"),
            "--output",
            str(out),
            "cascade/tts=piper",
            "cascade.llm.max_new_tokens=24",
            "cascade.warmup=false",
        ]
    )
    assert code == 0
    audio, sr = sf.read(str(out), dtype="float32", always_2d=True)
    assert sr == SAMPLE_RATE and audio.shape[1] == 2
    assistant, heard_user = audio[:, 0], audio[:, 1]
    np.testing.assert_allclose(heard_user[: len(user)], user, atol=1e-4)  # ch1 is the user (16-bit wav)
    report = json.loads(out.with_suffix(".json").read_text())
    turns = report["turns"]
    assert len(turns) == 2 and not any(t["failed"] or t["interrupted"] for t in turns), turns

    def rms(t0: float, t1: float) -> float:
        a = assistant[int(t0 * SAMPLE_RATE) : int(t1 * SAMPLE_RATE)]
        return float(np.sqrt(np.mean(a**2))) if a.size else 0.0

    assert rms(0, ends[0]) == 0.0  # nothing before the first turn ends
    assert rms(ends[0], second_start) > 0.01  # the assistant answers turn 1 ...
    assert rms(ends[1], len(assistant) / SAMPLE_RATE) > 0.01  # ... and turn 2
    for turn, end in zip(turns, ends):
        assert abs(turn["user_end"] - end) < 0.15
        assert turn["first_audio_stream"] > turn["user_end"]
    kinds = [e["kind"] for e in report["events"]]
    assert kinds.count("user_text") == 2 and "assistant_text" in kinds
