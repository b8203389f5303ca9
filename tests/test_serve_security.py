"""Trusting the server (issue #45): tokens, per-client limits, idle slots, logs, closing every system.

Each test drives the real websocket server on loopback with real clients; the systems are the loopback
echo (cheap and deterministic), counted where a test needs to know every one was closed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import aiohttp
import numpy as np
import pytest
import sphn
import yarl
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from e2e_voice.constants import CONFIG_DIR, FRAME_SIZE, SAMPLE_RATE
from e2e_voice.serve import protocol
from e2e_voice.serve.client import chat
from e2e_voice.serve.loopback import LoopbackSystem
from e2e_voice.serve.server import ServeSettings
from tests.serve_helpers import serving

ERROR = bytes([protocol.Kind.ERROR])


def _ws(url: str) -> str:
    return url.replace("http", "ws", 1) + "/api/chat"


def _speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _opus_page() -> bytes:
    return sphn.OpusStreamWriter(SAMPLE_RATE).append_pcm(np.zeros(FRAME_SIZE, np.float32))


async def _status(
    session: aiohttp.ClientSession, url: str | yarl.URL, headers: dict[str, str] | None = None
) -> int:
    """The HTTP status of a websocket upgrade: 101 when the server accepted the connection."""
    try:
        async with session.ws_connect(url, headers=headers) as ws:
            await ws.close()
            return 101
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def _errors_until_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> list[str]:
    errors = []
    async with asyncio.timeout(timeout):
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == ERROR:
                errors.append(msg.data[1:].decode())
    return errors


# --- 1. tokens -------------------------------------------------------------------------------------------
def test_a_single_token_string_is_one_token() -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("serve", overrides=["serve.tokens=secret"])
    settings = ServeSettings(**OmegaConf.to_container(cfg.serve, resolve=True))  # type: ignore[arg-type]
    assert settings.tokens == ("secret",)

    async def run() -> None:
        async with serving(LoopbackSystem, settings) as (url, _, _), aiohttp.ClientSession() as s:
            assert await _status(s, _ws(url) + "?token=s") == 401
            assert await _status(s, _ws(url) + "?token=secret") == 101

    asyncio.run(run())


@pytest.mark.parametrize(
    "tokens, expected",
    [
        pytest.param(123, "serve.tokens must be a string or a list of strings", id="int"),
        pytest.param(["ok", 7], "serve.tokens[1] must be a string", id="int-in-list"),
        pytest.param(["ok", ""], "serve.tokens[1] is empty", id="empty-token"),
        pytest.param({"a": 1}, "serve.tokens must be a string or a list of strings", id="dict"),
    ],
)
def test_bad_token_settings_are_refused(tokens: object, expected: str) -> None:
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        ServeSettings(tokens=tokens)  # type: ignore[arg-type]


def test_no_way_in_without_the_right_token() -> None:
    """>= 1,000 tries of >= 25 kinds of wrong credentials: none is accepted; the right one still is."""
    secret = "s3cret-Tok_en"
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~%+ ")
    ways: list[tuple[str, dict[str, str] | None]] = [
        ("", None),
        ("?token=", None),
        ("?token", None),
        ("?token=s", None),
        ("?token=" + secret[:-1], None),
        ("?token=" + secret + "x", None),
        ("?token=" + secret.upper(), None),
        ("?token=%20" + secret, None),
        ("?token=" + secret + "%00", None),
        ("?token=" + secret + "%0A", None),
        ("?Token=" + secret, None),
        ("?tokens=" + secret, None),
        ("?token=" + secret[::-1], None),
        ("?token=" + "%73" + secret[1:] + "%FF", None),
        ("?token=" + secret.replace("e", "%D0%B5"), None),  # Cyrillic e
        ("?token[]=" + secret, None),
        ("", {"Authorization": secret}),
        ("", {"Authorization": "Bearer"}),
        ("", {"Authorization": "Bearer "}),
        ("", {"Authorization": "Bearer " + secret[:-1]}),
        ("", {"Authorization": "Basic " + secret}),
        ("", {"Authorization": "Bearer " + secret + " extra"}),
        ("", {"Authorization": "Token " + secret}),
        ("", {"X-Token": secret}),
        ("", {"Cookie": "token=" + secret}),
        ("?token=wrong", {"Authorization": "Bearer also-wrong"}),
    ]
    for _ in range(1000 - len(ways)):
        n = int(rng.integers(0, 40))
        guess = "".join(rng.choice(alphabet, n)).replace("%", "%25").replace(" ", "%20").replace("+", "%2B")
        ways.append(
            ("?token=" + guess, None) if rng.random() < 0.5 else ("", {"Authorization": "Bearer " + guess})
        )
    settings = ServeSettings(tokens=(secret,), auth_failures_per_minute=0, connections_per_minute=0)

    async def run() -> None:
        async with serving(LoopbackSystem, settings) as (url, server, _), aiohttp.ClientSession() as s:
            statuses = [
                await _status(s, yarl.URL(_ws(url) + query, encoded=True), headers) for query, headers in ways
            ]
            assert statuses.count(101) == 0, [w for w, st in zip(ways, statuses) if st == 101]
            assert set(statuses) == {401}
            assert server.metrics.auth_failures == len(ways)
            assert await _status(s, _ws(url) + "?token=" + secret) == 101
            assert await _status(s, _ws(url), {"Authorization": "Bearer " + secret}) == 101

    asyncio.run(run())


# --- 2. what /metrics and the logs show ----------------------------------------------------------------
def test_metrics_need_the_token_and_never_show_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    settings = ServeSettings(tokens=("secret-one", "secret-two"))

    async def run() -> None:
        async with serving(LoopbackSystem, settings) as (url, _, _), aiohttp.ClientSession() as s:
            await chat(_ws(url) + "?token=secret-one", _speech(0.5), realtime=False)
            await chat(_ws(url), _speech(0.5), realtime=False, headers={"Authorization": "Bearer secret-two"})
            assert (await s.get(url + "/metrics")).status == 401
            assert (await s.get(url + "/metrics?token=wrong")).status == 401
            resp = await s.get(url + "/metrics?token=secret-one")
            assert resp.status == 200
            body = await resp.text()
            assert "secret" not in body
            assert len((await resp.json())["audio_seconds_last_hour"]) == 2  # one entry per client, unnamed
            resp = await s.get(url + "/metrics", headers={"Authorization": "Bearer secret-two"})
            assert resp.status == 200

    asyncio.run(run())
    access = "\n".join(r.getMessage() for r in caplog.records if r.name == "aiohttp.access")
    assert "/api/chat?token=" in access and "/metrics?token=" in access  # logged, but redacted
    assert "secret" not in access


# --- 3. wrong tokens are rate-limited per IP -------------------------------------------------------------
def test_wrong_tokens_are_rate_limited_per_ip() -> None:
    settings = ServeSettings(tokens=("secret",), auth_failures_per_minute=10)

    async def run() -> None:
        async with serving(LoopbackSystem, settings) as (url, server, _), aiohttp.ClientSession() as s:
            statuses = [await _status(s, _ws(url) + f"?token=guess{i}") for i in range(40)]
            assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}
            # While locked out, the right token is refused too (else the lockout would still answer guesses).
            assert await _status(s, _ws(url) + "?token=secret") == 429
            assert (await s.get(url + "/metrics?token=secret")).status == 429
            assert server.metrics.auth_failures == 10

    asyncio.run(run())


# --- 4. with auth off, the client is its IP ------------------------------------------------------------
def test_auth_off_a_random_token_is_no_new_client() -> None:
    settings = ServeSettings(connections_per_minute=3, audio_seconds_per_client_hour=1.0)

    async def run() -> None:
        async with serving(LoopbackSystem, settings) as (url, _, _), aiohttp.ClientSession() as s:
            first = await chat(_ws(url) + "?token=a", _speech(2.0), realtime=False)
            assert first.errors and "audio quota" in first.errors[0]
            again = await chat(_ws(url) + "?token=b", _speech(0.5), realtime=False)
            assert again.errors and "audio quota" in again.errors[0]
            statuses = [await _status(s, _ws(url) + f"?token=r{i}") for i in range(3)]
            assert statuses == [101, 429, 429]

    asyncio.run(run())


def test_auth_on_limits_hold_per_token() -> None:
    settings = ServeSettings(tokens=("alice", "bob"), connections_per_minute=2)

    async def run() -> None:
        async with serving(LoopbackSystem, settings) as (url, _, _), aiohttp.ClientSession() as s:
            alice = [await _status(s, _ws(url) + "?token=alice") for _ in range(3)]
            bob = [await _status(s, _ws(url), {"Authorization": "Bearer bob"}) for _ in range(3)]
            assert alice == [101, 101, 429] and bob == [101, 101, 429]

    asyncio.run(run())


# --- 5. the message rate is per client -----------------------------------------------------------------
def test_message_rate_is_per_client_not_per_connection() -> None:
    settings = ServeSettings(messages_per_second=1, burst=20)

    async def pings(url: str) -> int:
        answered = 0
        async with aiohttp.ClientSession() as s, s.ws_connect(_ws(url)) as ws:
            await ws.receive(timeout=10)  # handshake
            for _ in range(15):
                await ws.send_bytes(protocol.ping())
            async with asyncio.timeout(10):
                async for msg in ws:
                    answered += msg.data == protocol.ping()
                    if answered == 15:
                        break
        return answered

    async def run() -> None:
        async with serving(LoopbackSystem, settings) as (url, server, _):
            answered = await asyncio.gather(*(pings(url) for _ in range(3)))
            assert sum(answered) <= 20 + 3, answered  # the burst, plus what refills in the test's second
            assert server.metrics.rate_limited >= 1

    asyncio.run(run())


# --- 6. idle connections give their slot back ----------------------------------------------------------
def test_idle_connection_is_closed_and_frees_its_slot() -> None:
    settings = ServeSettings(max_conversations=1, idle_timeout_seconds=0.6)

    async def run() -> None:
        async with serving(LoopbackSystem, settings) as (url, server, _), aiohttp.ClientSession() as s:
            async with s.ws_connect(_ws(url)) as ws:
                assert (await ws.receive(timeout=10)).data[:1] == b"\x00"
                t0 = time.perf_counter()
                await ws.send_bytes(protocol.ping())  # pings are not audio: they do not keep a slot
                errors = await _errors_until_closed(ws)
                assert errors and "no audio for 0.6 s" in errors[0], errors
                assert time.perf_counter() - t0 < 3
            assert server.metrics.errors.get("idle") == 1
            talking = await chat(_ws(url), _speech(1.5), realtime=True)  # 80 ms pages keep it alive
            assert not talking.errors and talking.handshake is not None

    asyncio.run(run())


# --- 7. every system built is closed ---------------------------------------------------------------------
class _Counted(LoopbackSystem):
    """A loopback system that takes a while to open and counts opens and closes."""

    opened = 0
    closed = 0
    lock = threading.Lock()

    def __init__(self) -> None:
        time.sleep(0.2)  # a system that takes a while to open (e.g. setting up a model's state)
        super().__init__()
        with self.lock:
            _Counted.opened += 1

    def close(self) -> None:
        with self.lock:
            _Counted.closed += 1


def test_every_system_is_closed_even_when_audio_comes_before_the_handshake() -> None:
    _Counted.opened = _Counted.closed = 0

    async def early(url: str) -> list[str]:
        async with aiohttp.ClientSession() as s, s.ws_connect(_ws(url)) as ws:
            await ws.send_bytes(protocol.audio(_opus_page()))
            return await _errors_until_closed(ws)

    async def run() -> None:
        async with serving(_Counted, ServeSettings(connections_per_minute=0)) as (url, _, _):
            results = await asyncio.gather(*(early(url) for _ in range(6)))
            assert all(r and "audio before handshake" in r[0] for r in results), results
            deadline = time.perf_counter() + 10
            while _Counted.closed < _Counted.opened or _Counted.opened < 6:
                assert time.perf_counter() < deadline, (_Counted.opened, _Counted.closed)
                await asyncio.sleep(0.05)

    asyncio.run(run())
    assert _Counted.opened == _Counted.closed == 6


# --- 8. what a client's messages can do to the log and how big messages are refused ------------------------
def test_client_error_messages_are_logged_sanitized_and_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="e2e_voice.serve")

    async def run() -> None:
        async with (
            serving(LoopbackSystem, ServeSettings(burst=500)) as (url, _, _),
            aiohttp.ClientSession() as s,
            s.ws_connect(_ws(url)) as ws,
        ):
            await ws.receive(timeout=10)
            forged = "oops\n2099-01-01 INFO e2e_voice.serve.server: FORGED \x1b[31mred" + "x" * 60_000
            for _ in range(50):
                await ws.send_bytes(protocol.error(forged))
            await ws.send_bytes(protocol.ping())
            assert (await ws.receive(timeout=10)).data == protocol.ping()

    asyncio.run(run())
    logged = [r.getMessage() for r in caplog.records if "client reported an error" in r.getMessage()]
    assert 1 <= len(logged) <= 12, len(logged)
    for line in logged:
        assert "\n" not in line and "\x1b" not in line and len(line) < 400, line[:500]
        assert "\\n2099-01-01" in line  # escaped, still readable


def test_a_far_too_big_message_gets_an_error_message_before_1009() -> None:
    settings = ServeSettings(max_message_bytes=4096)

    async def run() -> None:
        async with serving(LoopbackSystem, settings) as (url, server, _), aiohttp.ClientSession() as s:
            async with s.ws_connect(_ws(url)) as ws:
                await ws.receive(timeout=10)
                await ws.send_bytes(protocol.audio(bytes(5 * 4096)))
                errors = await _errors_until_closed(ws)
                assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
            assert errors and "exceeds the limit of 4096" in errors[0], errors
            assert server.metrics.errors.get("oversized") == 1

    asyncio.run(run())
