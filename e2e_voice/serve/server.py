"""The full-duplex websocket server: moshi's protocol at ``/api/chat``, one system per conversation.

Each connection gets its own :class:`~e2e_voice.system.DuplexSystem` from a factory (a cascade built on
models loaded once per process, or a slot of a shared batched engine), so setting up a conversation
never loads a model. Audio arrives as Ogg/Opus pages, is cut into 80 ms frames and stepped
through the system on a per-conversation worker thread, so a slow conversation never blocks the event loop
or the others. A bad message gets an error message (kind 5) and closes that one connection; the server and
the other conversations carry on.

Endpoints: ``/api/chat`` (websocket), ``/health``, ``/metrics`` (JSON), ``/`` (the browser page).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import sphn
from aiohttp import web

from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.serve import protocol
from e2e_voice.serve.protocol import Control, Kind, ProtocolError
from e2e_voice.system import DuplexSystem

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE


@dataclass
class ServeSettings:
    """Server settings (the ``serve`` config group maps onto these fields).

    Args:
        host: interface to bind.
        port: TCP port.
        max_conversations: live conversations at once; more are refused with an error message.
        max_conversation_seconds: user audio per conversation before the server ends it.
        max_message_bytes: larger websocket messages are refused (an 80 ms Opus page is ~300 bytes).
        tokens: accepted auth tokens (``?token=`` or ``Authorization: Bearer``); empty disables auth.
        messages_per_second: sustained messages per client (token bucket); 0 disables the limit.
        burst: token-bucket size for ``messages_per_second``.
        connections_per_minute: new connections per client per minute; 0 disables the limit.
        audio_seconds_per_client_hour: generated audio a client may receive per rolling hour; 0 disables.
        model_version: sent in the handshake.
        static_dir: directory of the browser page; None serves no page.
    """

    host: str = "127.0.0.1"
    port: int = 8998
    max_conversations: int = 8
    max_conversation_seconds: float = 600.0
    max_message_bytes: int = 1 << 16
    tokens: tuple[str, ...] = ()
    messages_per_second: float = 100.0
    burst: int = 200
    connections_per_minute: int = 60
    audio_seconds_per_client_hour: float = 3600.0
    model_version: int = 0
    static_dir: str | None = str(STATIC_DIR)

    def __post_init__(self) -> None:
        if self.max_conversations < 1:
            raise ValueError(f"serve.max_conversations must be >= 1, got {self.max_conversations}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"serve.max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        self.tokens = tuple(self.tokens)


@dataclass
class Metrics:
    """Counters exposed on ``/metrics``."""

    started: float = field(default_factory=time.time)
    conversations_total: int = 0
    frames: int = 0
    late_frames: int = 0
    dropped_frames: int = 0
    step_seconds: float = 0.0
    rate_limited: int = 0
    auth_failures: int = 0
    refused_full: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    @property
    def real_time_factor(self) -> float:
        """Processing time over audio time, all conversations (< 1 keeps up with real time)."""
        return self.step_seconds / (self.frames * FRAME_SECONDS) if self.frames else 0.0


class TokenBucket:
    """A refilling budget of ``rate`` events per second, at most ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.level, self.stamp = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1.0:
            self.level -= 1.0
            return True
        return False


class _Closed(Exception):
    """Ends a conversation; ``reason`` is sent to the client as an error message when set."""

    def __init__(self, reason: str | None, metric: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.metric = reason, metric


@dataclass
class _Conversation:
    ws: web.WebSocketResponse
    client: str
    executor: ThreadPoolExecutor
    bucket: TokenBucket | None
    system: DuplexSystem | None = None
    reader: Any = None
    writer: Any = None
    pcm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    seconds_in: float = 0.0
    handshake_sent: bool = False
    audio_started: bool = False


class ChatServer:
    """Serves a :class:`DuplexSystem` factory over moshi's websocket protocol.

    Args:
        factory: returns a new (or pooled) system for each conversation; called on a worker thread.
        settings: see :class:`ServeSettings`.
    """

    def __init__(self, factory: Callable[[], DuplexSystem], settings: ServeSettings | None = None) -> None:
        self.factory = factory
        self.settings = settings or ServeSettings()
        self.metrics = Metrics()
        self.live: dict[int, _Conversation] = {}
        self._connects: dict[str, list[float]] = {}
        self._audio_out: dict[str, list[tuple[float, float]]] = {}  # client -> [(time, seconds)] per minute
        self._shutting_down = False

    # --- application -------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/chat", self.handle_chat)
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/metrics", self.handle_metrics)
        if self.settings.static_dir:
            static = Path(self.settings.static_dir)

            async def index(_: web.Request) -> web.StreamResponse:
                return web.FileResponse(static / "index.html")

            app.router.add_get("/", index)
            app.router.add_static("/static/", static)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def handle_health(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "shutting_down" if self._shutting_down else "ok",
                "live_conversations": len(self.live),
                "max_conversations": self.settings.max_conversations,
            }
        )

    async def handle_metrics(self, _: web.Request) -> web.Response:
        m = self.metrics
        return web.json_response(
            {
                "live_conversations": len(self.live),
                "max_conversations": self.settings.max_conversations,
                "conversations_total": m.conversations_total,
                "frames": m.frames,
                "late_frames": m.late_frames,
                "dropped_frames": m.dropped_frames,
                "real_time_factor": round(m.real_time_factor, 4),
                "rate_limited": m.rate_limited,
                "auth_failures": m.auth_failures,
                "refused_full": m.refused_full,
                "errors": m.errors,
                "uptime_seconds": round(time.time() - m.started, 1),
                "limits": {
                    "messages_per_second": self.settings.messages_per_second,
                    "burst": self.settings.burst,
                    "connections_per_minute": self.settings.connections_per_minute,
                    "max_conversation_seconds": self.settings.max_conversation_seconds,
                    "max_message_bytes": self.settings.max_message_bytes,
                    "audio_seconds_per_client_hour": self.settings.audio_seconds_per_client_hour,
                },
                "audio_seconds_last_hour": {c: round(self._audio_used(c), 1) for c in self._audio_out},
            }
        )

    async def _on_shutdown(self, _: web.Application) -> None:
        self._shutting_down = True
        for conv in list(self.live.values()):
            with contextlib.suppress(Exception):
                await conv.ws.send_bytes(protocol.error("server shutting down"))
                await conv.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutting down")

    # --- admission -----------------------------------------------------------------------------------
    def _client_key(self, request: web.Request) -> tuple[str, str | None]:
        token = request.query.get("token")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :]
        return (f"token:{token[:8]}" if token else f"ip:{request.remote}"), token

    def _authorized(self, token: str | None) -> bool:
        if not self.settings.tokens:
            return True
        return token is not None and any(hmac.compare_digest(token, t) for t in self.settings.tokens)

    def _connection_allowed(self, client: str) -> bool:
        limit = self.settings.connections_per_minute
        if limit <= 0:
            return True
        now = time.monotonic()
        recent = [t for t in self._connects.get(client, []) if now - t < 60.0]
        if len(recent) >= limit:
            self._connects[client] = recent
            return False
        self._connects[client] = [*recent, now]
        return True

    def _audio_used(self, client: str) -> float:
        now = time.monotonic()
        ledger = [(t, sec) for t, sec in self._audio_out.get(client, []) if now - t < 3600.0]
        self._audio_out[client] = ledger
        return sum(sec for _, sec in ledger)

    def _charge_audio(self, client: str, seconds: float) -> None:
        """Count generated audio per client, in one-minute buckets over a rolling hour."""
        cap = self.settings.audio_seconds_per_client_hour
        if cap <= 0:
            return
        now = time.monotonic()
        ledger = self._audio_out.setdefault(client, [])
        if ledger and now - ledger[-1][0] < 60.0:
            ledger[-1] = (ledger[-1][0], ledger[-1][1] + seconds)
        else:
            ledger.append((now, seconds))
        if self._audio_used(client) > cap:
            self.metrics.rate_limited += 1
            raise _Closed(
                f"audio quota reached: at most {cap:g} s of generated audio per client per hour", None
            )

    # --- conversation ----------------------------------------------------------------------------------
    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        client, token = self._client_key(request)
        if not self._authorized(token):
            self.metrics.auth_failures += 1
            return web.json_response(
                {"error": "missing or invalid token: pass ?token=... or 'Authorization: Bearer ...'"},
                status=401,
            )
        if not self._connection_allowed(client):
            self.metrics.rate_limited += 1
            return web.json_response(
                {"error": f"too many connections: at most {self.settings.connections_per_minute} per minute"},
                status=429,
            )
        # aiohttp's own limit closes without a reason; ours (checked below) sends an error message first.
        ws = web.WebSocketResponse(max_msg_size=4 * self.settings.max_message_bytes)
        await ws.prepare(request)
        if self._shutting_down or len(self.live) >= self.settings.max_conversations:
            self.metrics.refused_full += 1
            await ws.send_bytes(
                protocol.error(
                    f"server is full ({self.settings.max_conversations} conversations); try again later"
                )
            )
            await ws.close()
            return ws
        bucket = None
        if self.settings.messages_per_second > 0:
            bucket = TokenBucket(self.settings.messages_per_second, self.settings.burst)
        conv = _Conversation(ws, client, ThreadPoolExecutor(max_workers=1, thread_name_prefix="conv"), bucket)
        self.live[id(conv)] = conv
        self.metrics.conversations_total += 1
        try:
            await self._run(conv)
        except _Closed as closed:
            if closed.metric:
                self.metrics.error(closed.metric)
            if closed.reason and not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.send_bytes(protocol.error(closed.reason))
        except Exception as exc:  # a failing system must not take the server down
            log.exception("conversation failed")
            self.metrics.error("system_error")
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.send_bytes(
                        protocol.error(f"internal error in the system: {type(exc).__name__}: {exc}")
                    )
        finally:
            self.live.pop(id(conv), None)
            if not ws.closed:
                await ws.close()
            if conv.system is not None:
                with contextlib.suppress(Exception):
                    await asyncio.get_running_loop().run_in_executor(conv.executor, conv.system.close)
            conv.executor.shutdown(wait=False, cancel_futures=True)
        return ws

    async def _run(self, conv: _Conversation) -> None:
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(conv.executor, self._open_system)
        receiving: asyncio.Future[Any] = asyncio.ensure_future(conv.ws.receive())
        # Until the system is ready the client must wait for our handshake; audio sent earlier is an error.
        while not conv.handshake_sent:
            done, _ = await asyncio.wait({opening, receiving}, return_when=asyncio.FIRST_COMPLETED)
            if receiving in done:
                msg = receiving.result()
                if msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == bytes([Kind.AUDIO]):
                    opening.cancel()
                    raise _Closed(
                        "audio before handshake: wait for the server's handshake (message kind 0)"
                        " before sending audio",
                        "out_of_order",
                    )
                await self._dispatch(conv, msg)
                receiving = asyncio.ensure_future(conv.ws.receive())
            if opening in done:
                conv.system = opening.result()
                conv.reader = sphn.OpusStreamReader(SAMPLE_RATE)
                conv.writer = sphn.OpusStreamWriter(SAMPLE_RATE)
                await conv.ws.send_bytes(protocol.handshake(self.settings.model_version))
                conv.handshake_sent = True
        while True:
            msg = await receiving
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return
            await self._dispatch(conv, msg)
            receiving = asyncio.ensure_future(conv.ws.receive())

    def _open_system(self) -> DuplexSystem:
        system = self.factory()
        system.reset()
        return system

    async def _dispatch(self, conv: _Conversation, msg: aiohttp.WSMessage) -> None:
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            raise _Closed(None)
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise _Closed(None, "websocket_error")
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise _Closed(
                "only binary messages are accepted (moshi protocol: kind byte + payload)", "bad_message"
            )
        if conv.bucket is not None and not conv.bucket.take():
            self.metrics.rate_limited += 1
            raise _Closed(
                f"rate limit exceeded: at most {self.settings.messages_per_second:g} messages per second",
                None,
            )
        data: bytes = msg.data
        if len(data) > self.settings.max_message_bytes:
            raise _Closed(
                f"message of {len(data)} bytes exceeds the limit of {self.settings.max_message_bytes};"
                " send audio as 80 ms Ogg/Opus pages",
                "oversized",
            )
        try:
            message = protocol.parse(data)
        except ProtocolError as exc:
            raise _Closed(str(exc), "bad_message") from None
        if message.kind == Kind.AUDIO:
            await self._on_audio(conv, message.payload)
        elif (
            message.kind == Kind.CONTROL and message.payload[0] == Control.RESTART and conv.system is not None
        ):
            await asyncio.get_running_loop().run_in_executor(conv.executor, conv.system.reset)
            conv.pcm = np.zeros(0, np.float32)
        elif message.kind == Kind.PING:
            await conv.ws.send_bytes(protocol.ping())
        elif message.kind == Kind.HANDSHAKE:
            if conv.audio_started:
                raise _Closed(
                    "handshake after audio: a handshake may only open the conversation", "out_of_order"
                )
        elif message.kind == Kind.ERROR:
            log.info("client reported an error: %s", message.payload.decode("utf-8", "replace"))
        # TEXT and METADATA from clients carry nothing the server acts on; other controls are not used
        # in full-duplex mode (protocol.md).

    async def _on_audio(self, conv: _Conversation, ogg: bytes) -> None:
        if not conv.handshake_sent or conv.system is None:
            raise _Closed("audio before handshake", "out_of_order")
        conv.audio_started = True
        try:
            pcm = conv.reader.append_bytes(ogg)
        except Exception as exc:  # sphn raises ValueError (and others) on damaged Ogg/Opus data
            raise _Closed(f"invalid Ogg/Opus audio: {exc}", "bad_audio") from None
        if pcm is None or len(pcm) == 0:
            return
        conv.pcm = np.concatenate([conv.pcm, np.asarray(pcm, np.float32).reshape(-1)])
        loop = asyncio.get_running_loop()
        while len(conv.pcm) >= FRAME_SIZE:
            frame, conv.pcm = conv.pcm[:FRAME_SIZE], conv.pcm[FRAME_SIZE:]
            conv.seconds_in += FRAME_SECONDS
            if conv.seconds_in > self.settings.max_conversation_seconds:
                raise _Closed(
                    f"conversation length limit reached ({self.settings.max_conversation_seconds:g} s);"
                    " start a new conversation",
                    "too_long",
                )
            t0 = time.perf_counter()
            out = await loop.run_in_executor(conv.executor, conv.system.step, frame)
            dt = time.perf_counter() - t0
            self.metrics.frames += 1
            self.metrics.step_seconds += dt
            if dt > FRAME_SECONDS:
                self.metrics.late_frames += 1
            self._charge_audio(conv.client, FRAME_SECONDS)
            data = conv.writer.append_pcm(np.asarray(out.audio, np.float32))
            if data:
                await conv.ws.send_bytes(protocol.audio(data))
            if out.text:
                await conv.ws.send_bytes(protocol.text(out.text))


def run_server(factory: Callable[[], DuplexSystem], settings: ServeSettings) -> None:
    """Serve until interrupted (Ctrl-C closes live conversations cleanly)."""
    server = ChatServer(factory, settings)
    print(f"e2e-voice: serving on http://{settings.host}:{settings.port}/ (websocket /api/chat)")
    web.run_app(server.app(), host=settings.host, port=settings.port, print=None)
