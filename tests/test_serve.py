"""The websocket server over moshi's protocol, driven by real clients over loopback."""

from __future__ import annotations

import asyncio
import functools
import time

import aiohttp
import numpy as np
import pytest
import sphn

from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.serve import protocol
from e2e_voice.serve.client import chat
from e2e_voice.serve.loopback import LoopbackSystem
from e2e_voice.serve.server import ServeSettings
from tests.helpers import espeak_speech
from tests.serve_helpers import serving

DELAY = 3


_WORDS = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
]


@functools.cache
def _signal(seed: int, seconds: float = 2.0) -> np.ndarray:
    """Speech (espeak-ng), so the Opus round trips keep the waveform and a cross-correlation finds it."""
    rng = np.random.default_rng(seed)
    speech = espeak_speech(" ".join(rng.choice(_WORDS, 12)))
    n = int(seconds * SAMPLE_RATE)
    return np.pad(speech, (0, max(0, n - len(speech))))[:n].astype(np.float32)


def _loopback() -> LoopbackSystem:
    return LoopbackSystem(delay_frames=DELAY, text_every=5)


def _ws(url: str) -> str:
    return url.replace("http", "ws", 1) + "/api/chat"


def _lag(x: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    n = min(len(x), len(y))
    c = np.correlate(y[:n], x[: n // 2], "valid")
    k = int(np.argmax(c))
    norm = np.linalg.norm(x[: n // 2]) * np.linalg.norm(y[k : k + n // 2]) + 1e-9
    return k, float(c[k] / norm)


def test_protocol_roundtrip() -> None:
    async def run() -> None:
        async with serving(_loopback, ServeSettings(model_version=7)) as (url, _server, _):
            x = _signal(0)
            result = await chat(_ws(url), x, realtime=False)
            assert result.handshake == (0, 7)
            assert not result.errors
            assert len(result.audio) >= len(x)
            lag, corr = _lag(x, result.audio)
            # The echo arrives DELAY frames later, plus the two Opus codecs' look-ahead (a few ms).
            assert DELAY * FRAME_SIZE <= lag <= DELAY * FRAME_SIZE + 1200, lag
            assert corr > 0.8, corr
            assert [t for _, t in result.texts][:2] == [" 5", " 10"]
            async with aiohttp.ClientSession() as s:
                metrics = await (await s.get(url + "/metrics")).json()
                health = await (await s.get(url + "/health")).json()
            assert metrics["frames"] >= len(x) // FRAME_SIZE
            assert metrics["conversations_total"] == 1 and metrics["live_conversations"] == 0
            assert 0 < metrics["real_time_factor"] < 1
            assert health["status"] == "ok"

    asyncio.run(run())


def test_two_conversations_equal_separate_runs() -> None:
    async def run() -> None:
        a, b = _signal(1), _signal(2, 1.5)
        async with serving(_loopback) as (url, _, _):
            solo_a = await chat(_ws(url), a, realtime=False)
            solo_b = await chat(_ws(url), b, realtime=False)
            both = await asyncio.gather(chat(_ws(url), a, realtime=True), chat(_ws(url), b, realtime=True))
        for solo, together in zip((solo_a, solo_b), both):
            n = min(len(solo.audio), len(together.audio))
            assert n > 0
            np.testing.assert_array_equal(solo.audio[:n], together.audio[:n])

    asyncio.run(run())


async def _raw(
    url: str, messages: list[bytes], wait_handshake: bool = True
) -> tuple[list[bytes], int | None]:
    """Send raw messages; return everything received until the server closes, and the close code."""
    got: list[bytes] = []
    async with aiohttp.ClientSession() as s, s.ws_connect(_ws(url)) as ws:
        if wait_handshake:
            first = await ws.receive(timeout=10)
            got.append(first.data)
        for m in messages:
            await ws.send_bytes(m)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                got.append(msg.data)
        return got, ws.close_code


def _opus_page() -> bytes:
    return sphn.OpusStreamWriter(SAMPLE_RATE).append_pcm(np.zeros(FRAME_SIZE, np.float32))


@pytest.mark.parametrize(
    "messages, expected",
    [
        pytest.param([b"\x09hello"], "unknown message kind 9", id="unknown-kind"),
        pytest.param([b"\x01" + b"garbage, not ogg" * 4], "invalid Ogg/Opus", id="garbage-opus"),
        pytest.param([b"\x01" + bytes(200_000)], "exceeds the limit", id="huge-frame"),
        pytest.param([b""], "empty message", id="empty"),
        pytest.param([b"\x03\x09"], "control message", id="bad-control"),
        pytest.param([b"\x04{not json"], "not valid JSON", id="bad-metadata"),
        pytest.param([b"\x01" + _opus_page()[:40] + b"\xff" * 64], "invalid Ogg/Opus", id="truncated-opus"),
    ],
)
def test_bad_message_closes_only_that_connection(messages: list[bytes], expected: str) -> None:
    async def run() -> None:
        async with serving(_loopback) as (url, server, _):
            good = asyncio.create_task(chat(_ws(url), _signal(3, 2.0), realtime=True))
            await asyncio.sleep(0.3)
            got, _ = await _raw(url, messages)
            errors = [m[1:].decode() for m in got if m[:1] == bytes([protocol.Kind.ERROR])]
            assert errors and expected in errors[0], errors
            result = await good
            assert not result.errors and len(result.audio) >= 2 * SAMPLE_RATE
            assert len(server.live) == 0

    asyncio.run(run())


def test_audio_before_handshake() -> None:
    def slow() -> LoopbackSystem:
        time.sleep(0.5)  # a system that takes a while to open (e.g. loading a model)
        return _loopback()

    async def run() -> None:
        async with serving(slow) as (url, _, _):
            got, _ = await _raw(url, [b"\x01" + _opus_page()], wait_handshake=False)
            errors = [m[1:].decode() for m in got if m[:1] == bytes([protocol.Kind.ERROR])]
            assert errors and "audio before handshake" in errors[0]
            assert not any(m[:1] == bytes([protocol.Kind.HANDSHAKE]) for m in got)

    asyncio.run(run())


def test_text_frame_is_refused() -> None:
    async def run() -> None:
        async with (
            serving(_loopback) as (url, _, _),
            aiohttp.ClientSession() as s,
            s.ws_connect(_ws(url)) as ws,
        ):
            await ws.receive(timeout=10)
            await ws.send_str("hello")
            msg = await ws.receive(timeout=10)
            assert msg.data[:1] == bytes([protocol.Kind.ERROR]) and b"only binary" in msg.data

    asyncio.run(run())


def test_auth() -> None:
    async def run() -> None:
        async with serving(_loopback, ServeSettings(tokens=("s3cret",))) as (url, server, _):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await chat(_ws(url), _signal(4, 0.3), realtime=False)
            assert info.value.status == 401
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await chat(_ws(url) + "?token=wrong", _signal(4, 0.3), realtime=False)
            ok = await chat(_ws(url) + "?token=s3cret", _signal(4, 0.3), realtime=False)
            assert ok.handshake is not None and not ok.errors
            ok = await chat(
                _ws(url), _signal(4, 0.3), realtime=False, headers={"Authorization": "Bearer s3cret"}
            )
            assert ok.handshake is not None and not ok.errors
            assert server.metrics.auth_failures == 2

    asyncio.run(run())


def test_message_rate_limit() -> None:
    async def run() -> None:
        async with serving(_loopback, ServeSettings(messages_per_second=5, burst=5)) as (url, server, _):
            got, _ = await _raw(url, [protocol.ping()] * 20)
            errors = [m[1:].decode() for m in got if m[:1] == bytes([protocol.Kind.ERROR])]
            assert errors and "rate limit" in errors[0]
            assert sum(m == protocol.ping() for m in got) == 5  # the burst was answered, then the limit hit
            assert server.metrics.rate_limited == 1

    asyncio.run(run())


def test_connection_rate_limit_and_capacity() -> None:
    async def run() -> None:
        settings = ServeSettings(connections_per_minute=2, max_conversations=1)
        async with serving(_loopback, settings) as (url, server, _):
            first = asyncio.create_task(chat(_ws(url), _signal(5, 1.0), realtime=True))
            await asyncio.sleep(0.3)
            full = await chat(_ws(url), _signal(5, 0.2), realtime=False)
            assert full.handshake is None and "server is full" in full.errors[0]
            assert not (await first).errors
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await chat(_ws(url), _signal(5, 0.2), realtime=False)
            assert info.value.status == 429
            assert server.metrics.refused_full == 1

    asyncio.run(run())


def test_conversation_length_limit() -> None:
    async def run() -> None:
        async with serving(_loopback, ServeSettings(max_conversation_seconds=0.5)) as (url, _, _):
            result = await chat(_ws(url), _signal(6, 2.0), realtime=False)
            assert result.errors and "length limit" in result.errors[0]

    asyncio.run(run())


def test_restart_control_resets_the_system() -> None:
    async def run() -> None:
        async with (
            serving(_loopback) as (url, _, _),
            aiohttp.ClientSession() as s,
            s.ws_connect(_ws(url)) as ws,
        ):
            await ws.receive(timeout=10)
            await ws.send_bytes(protocol.control(protocol.Control.RESTART))
            await ws.send_bytes(protocol.ping())
            msg = await ws.receive(timeout=10)
            assert msg.data == protocol.ping()

    asyncio.run(run())


def test_clean_shutdown_with_live_connections() -> None:
    async def run() -> None:
        async with serving(_loopback) as (url, server, runner):
            clients = [
                asyncio.create_task(chat(_ws(url), _signal(7 + i, 5.0), realtime=True)) for i in range(2)
            ]
            await asyncio.sleep(0.8)
            assert len(server.live) == 2
            t0 = time.perf_counter()
            await runner.cleanup()
            results = await asyncio.wait_for(asyncio.gather(*clients), 10)
            assert time.perf_counter() - t0 < 6
            for r in results:
                assert any("shutting down" in e for e in r.errors), r.errors
                assert len(r.audio) < 5 * SAMPLE_RATE
            assert not server.live

    asyncio.run(run())


def test_failing_system_reports_error_and_server_survives() -> None:
    class Broken(LoopbackSystem):
        def step(self, user_frame: np.ndarray):  # type: ignore[override]
            raise RuntimeError("model exploded")

    calls = iter([Broken, _loopback, _loopback])

    async def run() -> None:
        async with serving(lambda: next(calls)()) as (url, server, _):
            bad = await chat(_ws(url), _signal(8, 0.5), realtime=False)
            assert bad.errors and "model exploded" in bad.errors[0]
            good = await chat(_ws(url), _signal(8, 0.5), realtime=False)
            assert not good.errors and len(good.audio) > 0
            assert server.metrics.errors.get("system_error") == 1

    asyncio.run(run())


def test_generated_audio_quota() -> None:
    async def run() -> None:
        settings = ServeSettings(audio_seconds_per_client_hour=1.0)
        async with serving(_loopback, settings) as (url, _, _):
            async with aiohttp.ClientSession() as s:
                first = await chat(_ws(url), _signal(9, 2.0), realtime=False)
                assert first.errors and "audio quota reached" in first.errors[0]
                again = await chat(_ws(url), _signal(9, 0.5), realtime=False)  # still over quota this hour
                assert again.errors and "audio quota" in again.errors[0]
                metrics = await (await s.get(url + "/metrics")).json()
            assert metrics["limits"]["audio_seconds_per_client_hour"] == 1.0
            assert max(metrics["audio_seconds_last_hour"].values()) > 1.0

    asyncio.run(run())
