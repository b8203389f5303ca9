"""``system=remote`` against our own server on loopback (127.0.0.1): a real websocket, real Opus, real clock.

The loopback server echoes the user 3 frames (240 ms) later, so what the remote system returns must be
the user's signal delayed. Opus changes samples (lossy, ~6 ms of codec delay), so the check is on the
per-frame energy envelope: its cross-correlation with the input's peaks at the echo's delay, 3 frames
plus the transport (one step: a reply arrives after the step that sent its frame returned), and the
envelopes match there. Each test is bounded by a few seconds of real-time audio.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from e2e_voice import cli
from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.converse import converse
from e2e_voice.serve.loopback import LoopbackSystem
from e2e_voice.serve.remote import RemoteError, RemoteSystem
from e2e_voice.serve.server import ServeSettings
from e2e_voice.system import DuplexSystem, SystemOutput
from tests.serve_helpers import serving_in_thread

DELAY = 3  # the loopback server's echo delay, frames


def _ws(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/api/chat"


def _bursts(seconds: float) -> np.ndarray:
    """Tone bursts of different lengths and levels, so the envelope has one clear alignment."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    gate = np.zeros_like(t)
    for start, length, level in [(0.2, 0.3, 0.5), (0.8, 0.16, 0.3), (1.2, 0.5, 0.4), (2.0, 0.24, 0.5)]:
        gate[(t >= start) & (t < start + length)] = level
    return (gate * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


def _envelope(x: np.ndarray) -> np.ndarray:
    n = len(x) // FRAME_SIZE
    return np.sqrt(np.mean(x[: n * FRAME_SIZE].reshape(n, FRAME_SIZE) ** 2, axis=1))


@pytest.fixture()
def loopback_url() -> Iterator[str]:
    with serving_in_thread(lambda: LoopbackSystem(delay_frames=DELAY, text_every=10)) as url:
        yield _ws(url)


def test_remote_output_is_the_servers_echo(loopback_url: str) -> None:
    user = _bursts(2.6)
    system = RemoteSystem(loopback_url)
    try:
        result = converse(system, user, max_tail_s=3.0, progress=False)
        assert system.metrics() == []  # no failed turn
    finally:
        system.close()
    out, inp = _envelope(result.audio[0]), _envelope(user)
    n = len(inp)
    lags = range(0, 10)
    corr = [float(np.corrcoef(inp[: n - 10], out[lag : lag + n - 10])[0, 1]) for lag in lags]
    lag = int(np.argmax(corr))
    assert DELAY <= lag <= DELAY + 3, corr  # 3 frames of echo + the transport's one or two steps
    assert corr[lag] > 0.95, corr
    # Levels survive Opus within 1.5 dB inside the bursts (a burst's edge frames gain or lose the codec's
    # ~6 ms shift); silence comes back as exact zeros.
    on = inp[: n - lag] > 0.1
    loud = on & np.roll(on, 1) & np.roll(on, -1)
    ratio = out[lag:n][loud] / inp[: n - lag][loud]
    assert np.all(np.abs(20 * np.log10(ratio)) < 1.5), ratio
    assert not np.any(result.audio[0][-FRAME_SIZE:])
    # The text ticks (the frame index every 10 frames) arrive in order, one per 10 frames the server stepped.
    texts = [e.text for e in result.events if e.kind == "assistant_text"]
    ticks = [int(x) for x in "".join(texts).split()]
    assert ticks == [10 * (i + 1) for i in range(len(ticks))] and len(ticks) >= n // 10


class _DropsAt(DuplexSystem):
    """Echoes, then fails at step ``fail_at``: the server reports an internal error and closes the call."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at, self.k = fail_at, 0

    def reset(self) -> None:
        self.k = 0

    def step(self, user_frame: np.ndarray) -> SystemOutput:
        self.k += 1
        if self.k >= self.fail_at:
            raise RuntimeError("GPU fell off the bus")
        return SystemOutput(audio=self.check_frame(user_frame))


def _first_drops() -> object:
    """A factory whose first conversation breaks after 10 frames and whose later ones echo."""
    lock, opened = threading.Lock(), [0]

    def factory() -> DuplexSystem:
        with lock:
            opened[0] += 1
            first = opened[0] == 1
        return _DropsAt(10) if first else LoopbackSystem(delay_frames=DELAY)

    return factory


def test_dropped_call_is_a_failed_turn_and_the_next_conversation_runs() -> None:
    user = _bursts(2.6)
    with serving_in_thread(_first_drops()) as url:  # type: ignore[arg-type]
        system = RemoteSystem(_ws(url))
        try:
            broken = converse(system, user, max_tail_s=2.0, progress=False)
            (turn,) = system.metrics()
            assert turn["failed"] and "closed the connection" in turn["error"], turn
            assert "GPU fell off the bus" in turn["error"] and _ws(url) in turn["error"]
            assert broken.audio.shape[1] <= len(user) + 3 * FRAME_SIZE  # no tail fed to a dead call
            again = converse(system, user, max_tail_s=2.0, progress=False)
            assert system.metrics() == []
            assert np.abs(again.audio[0]).max() > 0.2  # the next conversation echoes
        finally:
            system.close()


def test_wrong_or_missing_token_is_a_clear_error() -> None:
    with serving_in_thread(LoopbackSystem, ServeSettings(tokens=("s3cret",))) as url:
        for token, says in [("nope", "not one it accepts"), (None, "no system.token was given")]:
            system = RemoteSystem(_ws(url), token=token)
            try:
                with pytest.raises(RemoteError, match=rf"refused the token \(HTTP 401\): .*{says}"):
                    system.reset()
            finally:
                system.close()
        system = RemoteSystem(_ws(url), token="s3cret")
        try:
            system.reset()  # the right token opens the conversation
        finally:
            system.close()


def test_bad_address_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"needs the server's address: pass system\.url=ws://"):
        RemoteSystem()
    with pytest.raises(ValueError, match=r"not a websocket URL \(ws://h:1/api/chat\)"):
        RemoteSystem("http://h:1/api/chat")
    system = RemoteSystem("ws://127.0.0.1:9/api/chat", connect_timeout_s=2)  # port 9: nothing listens
    try:
        with pytest.raises(RemoteError, match=r"cannot reach ws://127\.0\.0\.1:9/api/chat"):
            system.reset()
    finally:
        system.close()


def test_cli_without_url_says_how_to_pass_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["e2e-voice"])
    sf.write(tmp_path / "in.wav", np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    argv = ["converse", "--input", f"{tmp_path}/in.wav", "--output", f"{tmp_path}/o.wav", "system=remote"]
    assert cli.main(argv) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and re.search(r"error: .*system\.url=ws://HOST:8998/api/chat", err), err


def test_bench_reports_the_dropped_conversation_and_runs_the_next() -> None:
    """Through the bench's own runner, on the fixture corpus: the first conversation's call drops (a
    failed turn, reported for that conversation), the second is echoed in full."""
    from e2e_voice.data.manifest import read_manifest
    from eval.bench import run_system

    entries = read_manifest("tests/fixtures/dialogues/manifest.jsonl").entries
    entries = [entries[0], min(entries, key=lambda e: e.duration)]
    with serving_in_thread(_first_drops()) as url:  # type: ignore[arg-type]
        outputs = run_system("remote", [f"system.url={_ws(url)}"], entries)
    first, second = outputs
    assert len(first.errors) == 1 and "GPU fell off the bus" in first.errors[0]
    assert second.errors == []
    user = sf.read(second.entry.audio, dtype="float32")[0][:, 1]
    assert len(second.assistant) >= len(user)
    out, inp = _envelope(second.assistant), _envelope(user)
    corr = [float(np.corrcoef(inp[:-10], out[lag : lag + len(inp) - 10])[0, 1]) for lag in range(10)]
    assert DELAY <= int(np.argmax(corr)) <= DELAY + 3 and max(corr) > 0.9, corr


def test_remote_hears_what_an_e2e_server_sends() -> None:
    """Our server running the e2e engine (toy random weights, greedy, so deterministic): the remote
    system's text is what a plain client of the same server receives for the same input."""
    import asyncio

    from e2e_voice.engine import DuplexEngine
    from e2e_voice.lm.generate import GREEDY
    from e2e_voice.serve.client import chat
    from tests.test_engine import _models

    codec, lm = _models()
    engine = DuplexEngine(codec, lm, text_piece=lambda i: f"<{i}>", max_conversations=1, sampling=GREEDY)  # type: ignore[arg-type]
    user = _bursts(1.6)
    with serving_in_thread(engine.open) as url:
        direct = asyncio.run(chat(_ws(url), user, realtime=False, tail_seconds=0.0, timeout=60))
        system = RemoteSystem(_ws(url))
        try:
            result = converse(system, user, max_tail_s=1.0, progress=False)
        finally:
            system.close()
    heard = "".join(e.text for e in result.events if e.kind == "assistant_text")
    sent = "".join(t for _, t in direct.texts)
    assert sent and heard.startswith(sent), (heard, sent)  # the remote fed a tail, so it may hear more
