"""The full-duplex websocket server: moshi's protocol at ``/api/chat``, one system per conversation.

Each connection gets its own :class:`~e2e_voice.system.DuplexSystem` from a factory (a cascade built on
models loaded once per process, or a slot of a shared batched engine), so setting up a conversation
never loads a model. Audio arrives as Ogg/Opus pages, is cut into 80 ms frames and stepped
through the system on a per-conversation worker thread, so a slow conversation never blocks the event loop
or the others. A bad message gets an error message (kind 5) and closes that one connection; the server and
the other conversations carry on.

Endpoints: ``/api/chat`` (websocket), ``/health``, ``/metrics`` (JSON; behind the token when auth is on),
``/`` (the browser page). What is trusted, limited per client and logged: docs/serving.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import sphn
from aiohttp import web

from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.serve import protocol
from e2e_voice.serve.limits import AudioLedger, BucketPool, SlidingWindow, TokenBucket
from e2e_voice.serve.protocol import Control, Kind, ProtocolError
from e2e_voice.serve.redact import LogBudget, RedactingAccessLogger, printable, public_id
from e2e_voice.serve.settings import FRAME_SECONDS, Metrics, ServeSettings
from e2e_voice.system import DuplexSystem

__all__ = ["ACCESS_LOG_CLASS", "ChatServer", "Metrics", "ServeSettings", "TokenBucket", "run_server"]

log = logging.getLogger(__name__)
ACCESS_LOG_CLASS = RedactingAccessLogger  # pass to web.AppRunner / run_app: the URL's token is redacted
_CLOSED_TYPES = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


class _Closed(Exception):
    """Ends a conversation; ``reason`` is sent to the client as an error message when set."""

    def __init__(self, reason: str | None, metric: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.metric = reason, metric


class _ExplainingWebSocket(web.WebSocketResponse):
    """A websocket that says why before aiohttp closes it for a frame it could not read.

    aiohttp refuses a message over ``max_msg_size`` (or a malformed frame) inside ``receive`` and
    closes straight away (1009 / 1002); the client would see a bare close code. Sending an error
    message (kind 5) first keeps the promise that every refused message is explained.
    """

    def __init__(self, limit: int, metrics: Metrics) -> None:
        super().__init__(max_msg_size=4 * limit)
        self._limit, self._metrics = limit, metrics

    async def close(
        self, *, code: int = aiohttp.WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        reason = None
        if code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
            reason = (
                f"message exceeds the limit of {self._limit} bytes (more than {4 * self._limit} were"
                " announced); send audio as 80 ms Ogg/Opus pages"
            )
            self._metrics.error("oversized")
        elif code in (aiohttp.WSCloseCode.PROTOCOL_ERROR, aiohttp.WSCloseCode.INVALID_TEXT):
            reason = f"malformed websocket frame (close code {int(code)}): see RFC 6455"
            self._metrics.error("bad_frame")
        if reason and not self.closed:
            with contextlib.suppress(Exception):
                await self.send_bytes(protocol.error(reason))
        return await super().close(code=code, message=message, drain=drain)


@dataclass
class _Conversation:
    ws: web.WebSocketResponse
    client: str
    executor: ThreadPoolExecutor
    bucket: TokenBucket | None
    opening: Future[DuplexSystem] | None = None
    system: DuplexSystem | None = None
    reader: Any = None
    writer: Any = None
    pcm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    seconds_in: float = 0.0
    handshake_sent: bool = False
    audio_started: bool = False
    last_audio: float = field(default_factory=time.monotonic)


class ChatServer:
    """Serves a :class:`DuplexSystem` factory over moshi's websocket protocol.

    Args:
        factory: returns a new (or pooled) system for each conversation; called on a worker thread.
        settings: see :class:`ServeSettings`.
    """

    def __init__(self, factory: Callable[[], DuplexSystem], settings: ServeSettings | None = None) -> None:
        self.factory = factory
        self.settings = s = settings or ServeSettings()
        self.metrics = Metrics()
        self.live: dict[int, _Conversation] = {}
        self._connects = SlidingWindow(s.connections_per_minute)
        self._auth_failures = SlidingWindow(s.auth_failures_per_minute)
        self._buckets = BucketPool(s.messages_per_second, s.burst) if s.messages_per_second > 0 else None
        self._audio = AudioLedger(s.audio_seconds_per_client_hour)
        self._client_log = LogBudget()
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

    async def handle_metrics(self, request: web.Request) -> web.Response:
        """Counters and limits; behind the token when auth is on. Clients appear as salted hashes only."""
        admitted = self._admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        m, s = self.metrics, self.settings
        return web.json_response(
            {
                "live_conversations": len(self.live),
                "max_conversations": s.max_conversations,
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
                    "messages_per_second": s.messages_per_second,
                    "burst": s.burst,
                    "connections_per_minute": s.connections_per_minute,
                    "max_conversation_seconds": s.max_conversation_seconds,
                    "max_message_bytes": s.max_message_bytes,
                    "audio_seconds_per_client_hour": s.audio_seconds_per_client_hour,
                    "auth_failures_per_minute": s.auth_failures_per_minute,
                    "idle_timeout_seconds": s.idle_timeout_seconds,
                },
                "audio_seconds_last_hour": {
                    public_id(c): round(self._audio.used(c), 1) for c in list(self._audio.ledgers)
                },
            }
        )

    async def _on_shutdown(self, _: web.Application) -> None:
        self._shutting_down = True
        for conv in list(self.live.values()):
            with contextlib.suppress(Exception):
                await conv.ws.send_bytes(protocol.error("server shutting down"))
                await conv.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutting down")

    # --- admission -----------------------------------------------------------------------------------
    @staticmethod
    def _credentials(request: web.Request) -> str | None:
        """The token the client sent: ``Authorization: Bearer`` (scheme in any case) over ``?token=``."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return value
        return request.query.get("token")

    def _admit(self, request: web.Request) -> str | web.Response:
        """The client key of a request, or the response that refuses it.

        With auth off the key is the IP: a client-chosen ``?token=`` is no identity, or a new one per
        connection would escape every per-client limit. With auth on it is the verified token (its
        index: the key never holds the secret). Wrong tokens are counted per IP; past
        ``auth_failures_per_minute`` that IP is refused even with a right token, so guessing gets no
        answer for the rest of the minute.
        """
        ip = f"ip:{request.remote}"
        tokens = self.settings.tokens
        if not tokens:
            return ip
        if self._auth_failures.full(ip):
            self.metrics.rate_limited += 1
            return web.json_response(
                {"error": "too many wrong tokens from this address; try again in a minute"}, status=429
            )
        token = (self._credentials(request) or "").encode("utf-8", "surrogatepass")
        # Compare with every token (bytes: compare_digest refuses non-ASCII str) so timing says nothing.
        matches = [hmac.compare_digest(token, t.encode("utf-8")) for t in tokens]
        if any(matches):
            return f"token#{matches.index(True)}"
        self.metrics.auth_failures += 1
        self._auth_failures.record(ip)
        return web.json_response(
            {"error": "missing or invalid token: pass ?token=... or 'Authorization: Bearer ...'"}, status=401
        )

    def _charge_audio(self, client: str, seconds: float) -> None:
        """Count generated audio per client, in one-minute buckets over a rolling hour."""
        if not self._audio.charge(client, seconds):
            self.metrics.rate_limited += 1
            raise _Closed(
                f"audio quota reached: at most {self.settings.audio_seconds_per_client_hour:g} s of generated"
                " audio per client per hour",
                None,
            )

    # --- conversation ----------------------------------------------------------------------------------
    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        admitted = self._admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        client = admitted
        if not self._connects.allow(client):
            self.metrics.rate_limited += 1
            return web.json_response(
                {"error": f"too many connections: at most {self.settings.connections_per_minute} per minute"},
                status=429,
            )
        # aiohttp's own limit (4x ours) closes without a reason; this websocket sends one first, and ours
        # (checked in _dispatch) sends an error message too.
        ws = _ExplainingWebSocket(self.settings.max_message_bytes, self.metrics)
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
        bucket = self._buckets.acquire(client) if self._buckets is not None else None
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
            closing = self._release(conv)  # first, with no await before it: runs even when cancelled
            with contextlib.suppress(Exception):
                if not ws.closed:
                    await ws.close()
                if closing is not None:
                    await asyncio.wrap_future(closing)
        return ws

    def _release(self, conv: _Conversation) -> Future[None] | None:
        """Close the conversation's system on every path, including one whose system is still opening.

        Audio before the handshake (or any early error) ends a conversation while the factory may still
        be building its system on the worker thread; cancelling the asyncio wrapper does not stop that,
        and the system it returns (a cascade starts two threads) must still be closed. Returns the
        future of the close when there is one to wait for.
        """
        if self._buckets is not None and conv.bucket is not None:
            self._buckets.release(conv.client)
        closing: Future[None] | None = None
        if conv.system is not None:
            closing = conv.executor.submit(conv.system.close)
        elif conv.opening is not None and not conv.opening.cancel():
            conv.opening.add_done_callback(_close_opened)
        conv.executor.shutdown(wait=False)
        return closing

    async def _run(self, conv: _Conversation) -> None:
        conv.opening = conv.executor.submit(self._open_system)
        opening = asyncio.wrap_future(conv.opening)
        receiving: asyncio.Future[Any] = asyncio.ensure_future(conv.ws.receive())
        # Until the system is ready the client must wait for our handshake; audio sent earlier is an error.
        while not conv.handshake_sent:
            done, _ = await asyncio.wait({opening, receiving}, return_when=asyncio.FIRST_COMPLETED)
            if opening in done:
                conv.system = opening.result()
            if receiving in done:
                msg = receiving.result()
                if msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == bytes([Kind.AUDIO]):
                    raise _Closed(
                        "audio before handshake: wait for the server's handshake (message kind 0)"
                        " before sending audio",
                        "out_of_order",
                    )
                await self._dispatch(conv, msg)
                receiving = asyncio.ensure_future(conv.ws.receive())
            if opening in done:
                conv.reader = sphn.OpusStreamReader(SAMPLE_RATE)
                conv.writer = sphn.OpusStreamWriter(SAMPLE_RATE)
                await conv.ws.send_bytes(protocol.handshake(self.settings.model_version))
                conv.handshake_sent = True
                conv.last_audio = time.monotonic()
        idle = self.settings.idle_timeout_seconds
        while True:
            if idle > 0:
                done, _ = await asyncio.wait(
                    {receiving}, timeout=max(0.0, conv.last_audio + idle - time.monotonic())
                )
                if not done:
                    if time.monotonic() - conv.last_audio < idle:
                        continue
                    raise _Closed(
                        f"idle timeout: no audio for {idle:g} s, so the conversation was closed to free its"
                        " slot; keep sending 80 ms pages (silence included) while connected",
                        "idle",
                    )
            msg = await receiving
            if msg.type in _CLOSED_TYPES:
                return
            await self._dispatch(conv, msg)
            receiving = asyncio.ensure_future(conv.ws.receive())

    def _open_system(self) -> DuplexSystem:
        system = self.factory()
        system.reset()
        return system

    async def _dispatch(self, conv: _Conversation, msg: aiohttp.WSMessage) -> None:
        if msg.type in _CLOSED_TYPES:
            raise _Closed(None)
        if msg.type == aiohttp.WSMsgType.ERROR:  # _ExplainingWebSocket has said why and counted it
            raise _Closed(None)
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
            self._log_client_error(conv, message.payload.decode("utf-8", "replace"))
        # TEXT and METADATA from clients carry nothing the server acts on; other controls are not used
        # in full-duplex mode (protocol.md).

    def _log_client_error(self, conv: _Conversation, text: str) -> None:
        """Log a client's error message as one escaped, shortened line, at most about one per second.

        The text is the client's: verbatim, a newline in it forges a log line and a stream of large
        messages fills the disk.
        """
        allowed, held_back = self._client_log.take()
        if allowed:
            more = f" ({held_back} more client error messages not logged)" if held_back else ""
            log.info("client reported an error (%s): %s%s", public_id(conv.client), printable(text), more)

    async def _on_audio(self, conv: _Conversation, ogg: bytes) -> None:
        if not conv.handshake_sent or conv.system is None:
            raise _Closed("audio before handshake", "out_of_order")
        conv.audio_started = True
        conv.last_audio = time.monotonic()
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


def _close_opened(opening: Future[DuplexSystem]) -> None:
    """Close a system whose conversation ended before it was ready (runs on its worker thread)."""
    if not opening.cancelled() and opening.exception() is None:
        try:
            opening.result().close()
        except Exception:
            log.exception("closing a system opened for a conversation that had already ended")


def run_server(factory: Callable[[], DuplexSystem], settings: ServeSettings) -> None:
    """Serve until interrupted (Ctrl-C closes live conversations cleanly); the access log hides tokens."""
    server = ChatServer(factory, settings)
    print(f"e2e-voice: serving on http://{settings.host}:{settings.port}/ (websocket /api/chat)")
    web.run_app(
        server.app(), host=settings.host, port=settings.port, print=None, access_log_class=ACCESS_LOG_CLASS
    )
