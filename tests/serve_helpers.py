"""Run a ChatServer on a free loopback port inside a test."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from aiohttp import web

from e2e_voice.serve.server import ACCESS_LOG_CLASS, ChatServer, ServeSettings
from e2e_voice.system import DuplexSystem


@contextlib.asynccontextmanager
async def serving(
    factory: Callable[[], DuplexSystem], settings: ServeSettings | None = None
) -> AsyncIterator[tuple[str, ChatServer, web.AppRunner]]:
    """Yield ``(http base url, server, runner)``; the runner is cleaned up on exit (if not already).

    The runner logs access lines as ``e2e-voice serve`` does (``ACCESS_LOG_CLASS``, tokens redacted).
    """
    server = ChatServer(factory, settings or ServeSettings())
    runner = web.AppRunner(server.app(), shutdown_timeout=5.0, access_log_class=ACCESS_LOG_CLASS)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", server, runner
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def serving_in_thread(
    factory: Callable[[], DuplexSystem], settings: ServeSettings | None = None
) -> Iterator[str]:
    """Serve from a background thread (for clients that block, like a browser driver)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, object] = {}

    async def start() -> None:
        cm = serving(factory, settings)
        box["cm"] = cm
        box["url"] = (await cm.__aenter__())[0]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert ready.wait(10), "server did not start"
    try:
        yield str(box["url"])
    finally:
        cm = box["cm"]
        asyncio.run_coroutine_threadsafe(cm.__aexit__(None, None, None), loop).result(10)  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
