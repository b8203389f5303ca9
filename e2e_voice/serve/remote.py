"""``system=remote``: any moshi-protocol websocket server, driven as a local :class:`DuplexSystem`.

An evaluator points ``e2e-voice bench`` (or ``converse``) at a server on another machine, ours
(``e2e-voice serve``) or moshi's own, and scores it side by side with the local systems::

    e2e-voice bench 'systems=[remote,cascade]' "system_overrides.remote=['system.url=ws://gpu-box:8998/api/chat']"

A background thread runs an asyncio loop that holds the websocket: the handshake (kind 0), then the
user's frames go out as Ogg/Opus pages (kind 1) and the server's audio and text (kinds 1, 2) are
collected as they arrive. ``step`` sends one 80 ms frame and returns one frame of what has come back
(a playout buffer: zeros until the reply arrives), so the remote system's network and compute latency
show up in its output exactly as a caller would hear them.

A remote server is a live call, so the only meaningful clock is the real one: ``step`` waits for its
frame's 80 ms slot when called faster (the bench's offline clock), and under ``realtime=true`` its wait
is already spent by ``converse``. A dropped connection does not raise mid-conversation: the rest of the
conversation is silence and :meth:`RemoteSystem.metrics` holds one failed turn with the reason, which
``converse`` prints and the bench reports for that conversation; the next ``reset`` reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import urlparse

import aiohttp
import numpy as np
import sphn

from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.serve import protocol
from e2e_voice.serve.protocol import Kind
from e2e_voice.system import DuplexSystem, SystemOutput

FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE


class RemoteError(ConnectionError):
    """The remote server could not be reached or refused the conversation; the message says what to fix."""


class _Link:
    """One websocket conversation, owned by the loop thread; the caller's thread reads the shared buffers
    under ``lock`` (audio samples, texts, the failure reason)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.audio: deque[np.ndarray] = deque()
        self.buffered = 0  # samples in `audio`
        self.received = 0  # samples received in the whole conversation
        self.texts: list[str] = []
        self.errors: list[str] = []
        self.failure: str | None = None
        self.last_receive = time.monotonic()
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.receiver: asyncio.Task[None] | None = None
        self.closing = False


class RemoteSystem(DuplexSystem):
    """A moshi-protocol server at ``url`` as a DuplexSystem (one websocket conversation per ``reset``).

    Args:
        url: the server's chat websocket, e.g. ``ws://gpu-box:8998/api/chat`` (``wss://`` for TLS).
        token: sent as ``Authorization: Bearer <token>`` when the server has ``serve.tokens``.
        connect_timeout_s: limit for connecting and receiving the server's handshake.
        reply_timeout_s: a conversation whose server sends nothing for this long while we keep sending
            has failed (the rest is silence; the reason is in ``metrics()``).
        pace: hold each step to its 80 ms slot of wall time (a live call); false only for tests of
            servers that answer faster than real time.
        silence_floor: output frames whose peak is below this are returned as exact zeros: Opus decodes
            digital silence to noise near 3e-5, which would otherwise read as the system never going quiet.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        connect_timeout_s: float = 10.0,
        reply_timeout_s: float = 10.0,
        pace: bool = True,
        silence_floor: float = 1e-3,
    ) -> None:
        self.url = _check_url(url)
        if token is not None and not isinstance(token, str):
            raise ValueError(f"system.token must be a string, got {type(token).__name__}: quote it")
        if connect_timeout_s <= 0 or reply_timeout_s <= 0:
            raise ValueError("system.connect_timeout_s and system.reply_timeout_s must be > 0 seconds")
        self.token = token
        self.connect_timeout_s, self.reply_timeout_s = float(connect_timeout_s), float(reply_timeout_s)
        self.pace, self.silence_floor = bool(pace), float(silence_floor)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="remote-system", daemon=True)
        self._thread.start()
        self._link: _Link | None = None
        self._turns: list[dict[str, Any]] = []
        self._steps, self._sent, self._t0 = 0, 0, 0.0
        self._writer: Any = None
        self._closed = False

    # --- DuplexSystem ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Close the previous conversation and open a new one (connect, wait for the handshake).

        Raises:
            RemoteError: the server is unreachable, refused the token, is full, or sent no handshake.
        """
        if self._closed:
            raise RuntimeError("RemoteSystem is closed")
        self._disconnect()
        self._turns, self._steps, self._sent = [], 0, 0
        self._writer = sphn.OpusStreamWriter(SAMPLE_RATE)
        self._link = self._run(self._connect(), self.connect_timeout_s + 5.0)
        self._t0 = time.monotonic()

    def step(self, user_frame: np.ndarray) -> SystemOutput:
        frame = self.check_frame(user_frame)
        link = self._link
        if link is None:
            raise RuntimeError("call reset() before step(): it opens the conversation with the server")
        silence = np.zeros(self.frame_size, np.float32)
        if self._failed(link):
            self._steps += 1
            return SystemOutput(audio=silence)  # the failure is recorded once; no pacing for a dead call
        if self.pace:
            delay = self._t0 + self._steps * FRAME_SECONDS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self._steps += 1
        if not self._sent:
            with link.lock:
                link.last_receive = time.monotonic()  # the reply clock starts with the first frame sent
        data = self._writer.append_pcm(frame)
        if data:
            asyncio.run_coroutine_threadsafe(self._send(link, protocol.audio(data)), self._loop)
        self._sent += self.frame_size
        with link.lock:
            audio = self._pop_frame(link)
            text, link.texts = "".join(link.texts), []
        if audio is None or float(np.abs(audio).max()) < self.silence_floor:
            audio = silence
        return SystemOutput(audio=audio, text=text)

    def busy(self) -> bool:
        """True while audio the server sent is still buffered, or its replies lag what was sent (it is
        still answering the input); a failed conversation is never busy."""
        link = self._link
        if link is None or self._failed(link):
            return False
        with link.lock:
            return link.buffered >= self.frame_size or link.received < self._sent - 2 * self.frame_size

    def metrics(self) -> list[dict[str, Any]]:
        """One failed turn with the reason when the conversation broke; empty otherwise."""
        return [dict(t) for t in self._turns]

    def close(self) -> None:
        if self._closed:
            return
        self._disconnect()
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    # --- conversation ----------------------------------------------------------------------------------
    def _failed(self, link: _Link) -> bool:
        """Whether the conversation broke; records the failed turn the first time it is seen."""
        with link.lock:
            if (
                link.failure is None
                and self._sent
                and time.monotonic() - link.last_receive > self.reply_timeout_s
            ):
                link.failure = (
                    f"no reply from the server for {self.reply_timeout_s:g} s (system.reply_timeout_s)"
                )
            failure = link.failure
        if failure is None:
            return False
        if not self._turns:
            at = self._steps * FRAME_SECONDS
            msg = f"remote {self.url}: {failure}, {at:.2f} s into the conversation; the rest is silence"
            self._turns.append({"index": 0, "user_end": at, "failed": True, "error": msg, "stages": {}})
        return True

    def _pop_frame(self, link: _Link) -> np.ndarray | None:
        """One frame off the playout buffer (caller holds the lock), or None until a whole frame is in."""
        if link.buffered < self.frame_size:
            return None
        out = np.empty(self.frame_size, np.float32)
        filled = 0
        while filled < self.frame_size:
            chunk = link.audio[0]
            take = min(len(chunk), self.frame_size - filled)
            out[filled : filled + take] = chunk[:take]
            filled += take
            if take == len(chunk):
                link.audio.popleft()
            else:
                link.audio[0] = chunk[take:]
        link.buffered -= self.frame_size
        return out

    def _run(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _disconnect(self) -> None:
        link, self._link = self._link, None
        if link is not None and not self._closed:
            with contextlib.suppress(Exception):
                self._run(self._close_link(link), 10.0)

    async def _connect(self) -> _Link:
        link = _Link()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        link.session = aiohttp.ClientSession()
        try:
            link.ws = await asyncio.wait_for(
                link.session.ws_connect(self.url, headers=headers, max_msg_size=0), self.connect_timeout_s
            )
            first = await asyncio.wait_for(link.ws.receive(), self.connect_timeout_s)
        except aiohttp.WSServerHandshakeError as exc:
            await link.session.close()
            raise RemoteError(self._refused(exc.status, exc.message)) from None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            await link.session.close()
            why = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
            raise RemoteError(
                f"cannot reach {self.url} ({why}): is a moshi-protocol server (`e2e-voice serve`) running"
                " there, and the port open? Set system.url=ws://HOST:PORT/api/chat"
            ) from None
        data = first.data if first.type == aiohttp.WSMsgType.BINARY else b""
        if not data or data[0] != Kind.HANDSHAKE or len(data) < 9:
            await self._close_link(link)
            said = data[1:].decode("utf-8", "replace") if data[:1] == bytes([Kind.ERROR]) else None
            raise RemoteError(
                f"{self.url} refused the conversation: {said}"
                if said
                else f"{self.url} sent no moshi handshake (message kind 0) but {first.type.name}: is it"
                " a moshi-protocol /api/chat endpoint?"
            )
        struct.unpack("<II", data[1:9])  # protocol and model version: any is accepted
        link.receiver = asyncio.ensure_future(self._receive(link))
        return link

    def _refused(self, status: int, message: str) -> str:
        if status in (401, 403):
            given = "no system.token was given" if not self.token else "system.token is not one it accepts"
            return (
                f"{self.url} refused the token (HTTP {status}): {given}; pass the server's serve.tokens value"
            )
        if status == 429:
            return f"{self.url} is rate limiting this client (HTTP 429); wait a minute and retry"
        return f"{self.url} refused the websocket (HTTP {status} {message}): is it a /api/chat endpoint?"

    async def _receive(self, link: _Link) -> None:
        reader = sphn.OpusStreamReader(SAMPLE_RATE)
        assert link.ws is not None
        try:
            async for msg in link.ws:
                if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                    continue
                kind, payload = msg.data[0], msg.data[1:]
                if kind == Kind.AUDIO:
                    pcm = reader.append_bytes(payload)
                    pcm = np.asarray(pcm if pcm is not None else [], np.float32).reshape(-1)
                    with link.lock:
                        link.last_receive = time.monotonic()
                        if len(pcm):
                            link.audio.append(pcm)
                            link.buffered += len(pcm)
                            link.received += len(pcm)
                elif kind == Kind.TEXT:
                    with link.lock:
                        link.texts.append(payload.decode("utf-8", "replace"))
                elif kind == Kind.ERROR:
                    with link.lock:
                        link.errors.append(payload.decode("utf-8", "replace"))
        except Exception as exc:  # a damaged page or a broken socket ends the conversation, with its reason
            with link.lock:
                link.errors.append(f"{type(exc).__name__}: {exc}")
        if not link.closing:
            code = link.ws.close_code
            with link.lock:
                said = f": {link.errors[-1]}" if link.errors else ""
                link.failure = link.failure or f"the server closed the connection (code {code}){said}"

    async def _send(self, link: _Link, data: bytes) -> None:
        if link.closing or link.ws is None or link.ws.closed:
            return
        try:
            await link.ws.send_bytes(data)
        except Exception as exc:
            with link.lock:
                link.failure = link.failure or f"sending failed ({type(exc).__name__}: {exc})"

    async def _close_link(self, link: _Link) -> None:
        link.closing = True
        if link.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.ws.close(), 5.0)
        if link.receiver is not None:
            link.receiver.cancel()
            with contextlib.suppress(BaseException):
                await link.receiver
        if link.session is not None:
            await link.session.close()


def _check_url(url: Any) -> str:
    """The server's websocket URL, or a ValueError that says how to pass it."""
    example = "system.url=ws://HOST:8998/api/chat"
    if url is None or not str(url).strip():
        raise ValueError(f"system=remote needs the server's address: pass {example} (and system.token=...)")
    parsed = urlparse(str(url))
    if parsed.scheme not in ("ws", "wss") or not parsed.netloc:
        hint = f" (ws://{parsed.netloc}{parsed.path})" if parsed.scheme in ("http", "https") else ""
        raise ValueError(f"system.url={url} is not a websocket URL{hint}: pass {example}")
    return str(url)
