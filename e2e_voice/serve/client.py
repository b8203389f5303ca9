"""A Python client for the ``/api/chat`` websocket (moshi's protocol): stream a recording, collect replies."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import sphn

from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.serve import protocol
from e2e_voice.serve.protocol import Kind

FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE


@dataclass
class ChatResult:
    """What a client session received.

    Attributes:
        audio: assistant audio, float32 ``[T]`` at 24 kHz.
        texts: ``(seconds since the first audio was sent, text)`` pairs.
        errors: error messages (kind 5) from the server.
        handshake: ``(protocol version, model version)`` or None when none arrived.
        close_code: websocket close code.
    """

    audio: np.ndarray
    texts: list[tuple[float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    handshake: tuple[int, int] | None = None
    close_code: int | None = None


async def chat(
    url: str,
    audio: np.ndarray,
    *,
    realtime: bool = True,
    tail_seconds: float = 0.5,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> ChatResult:
    """Send ``audio`` (float32 ``[T]`` at 24 kHz) to a server in 80 ms Ogg/Opus pages; return what came back.

    Args:
        url: e.g. ``ws://127.0.0.1:8998/api/chat``.
        audio: the user's side of the conversation.
        realtime: pace frames at 80 ms like a microphone; False sends as fast as the server answers.
        tail_seconds: silence appended so the last replies are flushed.
        timeout: overall limit in seconds.
        headers: extra HTTP headers (e.g. ``Authorization``).
    """
    pcm = np.concatenate(
        [np.asarray(audio, np.float32).reshape(-1), np.zeros(int(tail_seconds * SAMPLE_RATE), np.float32)]
    )
    pcm = np.pad(pcm, (0, (-len(pcm)) % FRAME_SIZE))
    n_frames = len(pcm) // FRAME_SIZE
    writer, reader = sphn.OpusStreamWriter(SAMPLE_RATE), sphn.OpusStreamReader(SAMPLE_RATE)
    result = ChatResult(audio=np.zeros(0, np.float32))
    chunks: list[np.ndarray] = []
    received = asyncio.Event()
    t0 = time.perf_counter()

    async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=headers) as ws:

        async def receive() -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                    continue
                kind, payload = msg.data[0], msg.data[1:]
                if kind == Kind.HANDSHAKE and len(payload) >= 8:
                    result.handshake = struct.unpack("<II", payload[:8])
                    received.set()
                elif kind == Kind.AUDIO:
                    out = reader.append_bytes(payload)
                    if out is not None and len(out):
                        chunks.append(np.asarray(out, np.float32))
                elif kind == Kind.TEXT:
                    result.texts.append((time.perf_counter() - t0, payload.decode("utf-8", "replace")))
                elif kind == Kind.ERROR:
                    result.errors.append(payload.decode("utf-8", "replace"))
                    received.set()

        receiver = asyncio.create_task(receive())
        try:
            await asyncio.wait_for(received.wait(), timeout)
            if result.handshake is not None:
                t0 = time.perf_counter()
                for i in range(n_frames):
                    if ws.closed or receiver.done():
                        break  # the server ended the conversation (its error message is in result.errors)
                    data = writer.append_pcm(pcm[i * FRAME_SIZE : (i + 1) * FRAME_SIZE])
                    if data:
                        try:
                            await ws.send_bytes(protocol.audio(data))
                        except (aiohttp.ClientConnectionResetError, ConnectionResetError):
                            break
                    if realtime:
                        await asyncio.sleep(max(0.0, t0 + (i + 1) * FRAME_SECONDS - time.perf_counter()))
                    else:
                        await asyncio.sleep(0)
                # Wait until as much audio came back as was sent (or the server went quiet).
                deadline = time.perf_counter() + timeout
                while (
                    sum(len(c) for c in chunks) < len(pcm) - 2 * FRAME_SIZE and time.perf_counter() < deadline
                ):
                    if receiver.done():
                        break
                    await asyncio.sleep(0.02)
        finally:
            await ws.close()
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        result.close_code = ws.close_code
    result.audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return result
