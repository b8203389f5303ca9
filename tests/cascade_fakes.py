"""A local aiohttp server (127.0.0.1 only) that speaks the OpenAI and Anthropic streaming chat protocols.

Used to test the HTTP LLM backends and the cascade's handling of a failing backend. Each request pops
the next behaviour from ``ChatServer.plan`` (``ok`` when empty): ``ok``, ``500``, ``slow`` (sleeps
before answering) or ``hang`` (sends one piece, then stalls).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class ChatServer:
    """The running server: its base URL, what it received, what it will do next."""

    url: str = ""
    answer: str = "Paris is the capital of France. It is a lovely city, full of museums."
    plan: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def pieces(self) -> list[str]:
        words = self.answer.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]


async def _behaviour(server: ChatServer, request: web.Request) -> str:
    server.requests.append(await request.json())
    server.headers.append(dict(request.headers))
    mode = server.plan.pop(0) if server.plan else "ok"
    if mode == "slow":
        await asyncio.sleep(3.0)
    return mode


async def _sse(request: web.Request, events: list[str], hang: bool) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i, ev in enumerate(events):
        await resp.write(ev.encode())
        if hang and i == 1:
            await asyncio.sleep(5.0)
            break
    return resp


def _app(server: ChatServer) -> web.Application:
    async def openai(request: web.Request) -> web.StreamResponse:
        mode = await _behaviour(server, request)
        if mode == "500":
            return web.Response(status=500, text='{"error": "model overloaded"}')
        events = [
            "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": p}}]}) + "\n\n"
            for p in server.pieces()
        ]
        return await _sse(request, [*events, "data: [DONE]\n\n"], mode == "hang")

    async def anthropic(request: web.Request) -> web.StreamResponse:
        mode = await _behaviour(server, request)
        if request.headers.get("x-api-key") != "test-key":
            return web.Response(
                status=401, text='{"type": "error", "error": {"type": "authentication_error"}}'
            )
        if mode == "500":
            return web.Response(status=500, text='{"type": "error"}')

        def event(kind: str, data: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        events = [
            event("message_start", {"message": {"id": "m1", "role": "assistant", "content": []}}),
            event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            *[
                event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": p}})
                for p in server.pieces()
            ],
            event("content_block_stop", {"index": 0}),
            event("message_delta", {"delta": {"stop_reason": "end_turn"}}),
            event("message_stop", {}),
        ]
        return await _sse(request, events, mode == "hang")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", openai)
    app.router.add_post("/v1/messages", anthropic)
    return app


def serve_chat() -> Iterator[ChatServer]:
    """Run the server in a thread for the duration of a fixture; yields its :class:`ChatServer`."""
    server = ChatServer()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner = web.AppRunner(_app(server), shutdown_timeout=0.5)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        server.url = f"http://127.0.0.1:{port}"
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert ready.wait(10), "local chat server did not start"
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
