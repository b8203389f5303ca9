"""A bounded fuzz of the websocket server (issue #45): it stays up, a good client beside the fuzz keeps
all its audio, every refused connection is told why, and threads and memory come back.

Loopback only (127.0.0.1), every loop bounded; ``benchmarks/bench_serve_fuzz.py`` is the long run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from e2e_voice.constants import CONFIG_DIR, FRAME_SIZE, SAMPLE_RATE
from e2e_voice.serve import protocol
from e2e_voice.serve.client import chat
from e2e_voice.serve.fuzz import FuzzStats, opus_pages, rss_mb, run_broken_frames, run_fuzz, settle_threads
from e2e_voice.serve.loopback import LoopbackSystem
from e2e_voice.serve.server import ServeSettings
from e2e_voice.system import DuplexSystem
from tests.serve_helpers import serving

MAX_BYTES = 4096
SETTINGS = ServeSettings(
    tokens=("good", "fuzz"),
    max_conversations=12,
    max_message_bytes=MAX_BYTES,
    messages_per_second=500,
    burst=1000,
    connections_per_minute=0,
    auth_failures_per_minute=10_000,
    idle_timeout_seconds=1.0,
)


def _settle(baseline: int, timeout: float = 10.0) -> int:
    return settle_threads(baseline, timeout, poll=0.05)


def _tone(seconds: float, hz: float = 330.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


async def _good_client(url: str, done: asyncio.Event) -> list[tuple[int, int, list[str]]]:
    """Talk in 1.5 s conversations until the fuzz is done: (samples sent, samples back, errors) each."""
    rounds = []
    while not done.is_set() or not rounds:
        x = _tone(1.5)
        result = await chat(url + "?token=good", x, realtime=True, timeout=60)
        rounds.append((len(x), len(result.audio), result.errors))
    return rounds


async def _fuzz_round(factory: Callable[[], DuplexSystem], connections: int, seed: int) -> dict[str, Any]:
    async with serving(factory, SETTINGS) as (url, server, _):
        ws_url = url.replace("http", "ws", 1) + "/api/chat"
        done = asyncio.Event()
        good = asyncio.create_task(_good_client(ws_url, done))
        stats = await run_fuzz(
            ws_url,
            connections=connections,
            seed=seed,
            token="fuzz",
            max_bytes=MAX_BYTES,
            idle_seconds=SETTINGS.idle_timeout_seconds,
        )
        port = int(url.rsplit(":", 1)[1])
        stats.merge(await run_broken_frames("127.0.0.1", port, "fuzz"))
        done.set()
        rounds = await asyncio.wait_for(good, 120)
        async with aiohttp.ClientSession() as s:
            health = await (await s.get(url + "/health")).json()
        after = await chat(ws_url + "?token=good", _tone(0.5), realtime=False)
        live = len(server.live)
    return {
        "stats": stats,
        "rounds": rounds,
        "health": health,
        "after": after,
        "live": live,
        "server": server,
    }


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Unhandled exceptions in the log: error-level records (aiohttp's and ours), lost task errors."""
    return [
        f"{r.name}: {r.getMessage()[:300]}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info or "never retrieved" in r.getMessage()
    ]


def test_fuzz_server_stays_up_and_the_good_client_keeps_its_audio(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    loop_errors: list[str] = []

    def run(connections: int, seed: int) -> dict[str, Any]:
        async def main() -> dict[str, Any]:
            asyncio.get_running_loop().set_exception_handler(
                lambda _, ctx: loop_errors.append(str(ctx)[:300])
            )
            return await _fuzz_round(lambda: LoopbackSystem(delay_frames=2), connections, seed)

        return asyncio.run(main())

    threads0 = threading.active_count()
    run(20, seed=1)  # warm-up: imports, codec libraries, allocator pools
    assert _settle(threads0) <= threads0
    rss0 = rss_mb()
    t0 = time.perf_counter()
    out = run(400, seed=2)
    elapsed = time.perf_counter() - t0
    stats: FuzzStats = out["stats"]
    print(f"fuzz: {elapsed:.1f} s", stats.connections, stats.messages, stats.refused, dict(stats.reasons))

    assert stats.connections >= 400 and stats.messages >= 8000, (stats.connections, stats.messages)
    assert stats.unexplained == [], stats.unexplained[:10]
    assert stats.refused == stats.explained and stats.refused > 20
    assert set(stats.statuses) == {401}, stats.statuses  # wrong tokens, each refused
    for reason in (
        "audio before handshake",
        "rate limit exceeded",
        "idle timeout",
        "malformed websocket frame",
    ):
        assert any(reason in r for r in stats.reasons), (reason, stats.reasons)
    assert out["health"]["status"] == "ok" and out["live"] == 0
    assert not out["after"].errors and len(out["after"].audio) >= 0.5 * SAMPLE_RATE
    rounds = out["rounds"]
    assert rounds and all(not errors for _, _, errors in rounds), rounds
    # Every frame the good client sent came back (the echo; the client's own flush tail aside).
    assert all(back >= sent - 2 * FRAME_SIZE for sent, back, _ in rounds), rounds
    assert out["server"].metrics.errors.get("system_error", 0) == 0
    assert loop_errors == [], loop_errors
    assert _problems(caplog) == [], _problems(caplog)
    assert _settle(threads0) <= threads0, [t.name for t in threading.enumerate()]
    assert rss_mb() - rss0 < 40, (rss0, rss_mb())
    assert elapsed < 60, elapsed


# --- the cascade: audio before the handshake must not leak its threads --------------------------------------
@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    from tests.cascade_fakes import serve_chat

    for server in serve_chat():
        yield server.url


@pytest.mark.slow
def test_cascade_audio_before_handshake_leaks_no_threads(llm_url: str) -> None:
    from e2e_voice.serve.app import system_factory

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "serve",
            overrides=[
                "system=cascade",
                "cascade/tts=espeak",
                "cascade/llm=openai",
                f"cascade.llm.base_url={llm_url}/v1",
                "cascade.warmup=false",
            ],
        )
    factory = system_factory(cfg.system, watermark=False)
    page = opus_pages(1)[0]

    async def early(url: str) -> list[str]:
        """Audio at once; the server's errors (none when the system was ready first: then we hang up)."""
        errors = []
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            await ws.send_bytes(protocol.audio(page))
            async with asyncio.timeout(20):
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == bytes([protocol.Kind.ERROR]):
                        errors.append(msg.data[1:].decode())
                    elif msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == bytes(
                        [protocol.Kind.HANDSHAKE]
                    ):
                        break
        return errors

    async def run(n: int) -> list[list[str]]:
        async with serving(factory, ServeSettings(connections_per_minute=0)) as (url, _, _):
            ws_url = url.replace("http", "ws", 1) + "/api/chat"
            return [await early(ws_url) for _ in range(n)]

    asyncio.run(run(2))  # warm-up
    baseline = _settle(threading.active_count())
    results = asyncio.run(run(30))
    refused = [r for r in results if r]
    # Most audio beats the ~30 ms setup on shared models; either way every system must be closed.
    assert len(refused) >= 10 and all("audio before handshake" in r[0] for r in refused), results
    assert _settle(baseline, 20.0) <= baseline, [t.name for t in threading.enumerate()]
