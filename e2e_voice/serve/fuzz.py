"""A bounded protocol fuzzer for ``/api/chat``: random and malformed messages of every kind, oversized
messages, audio before the handshake, wrong tokens, bursts over several connections, raw broken frames.

Used by ``tests/test_serve_fuzz.py`` (a short run) and ``benchmarks/bench_serve_fuzz.py`` (the long
one). Every connection ends by itself: after its messages it sends a ping and waits (bounded) for the
answer or for the server to close. A connection the server closed must have been told why (an error
message, kind 5); :class:`FuzzStats` counts the ones that were not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import sphn

from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE
from e2e_voice.serve import protocol

ERROR = protocol.Kind.ERROR


@dataclass
class FuzzStats:
    """What a fuzz run did and what came back."""

    connections: int = 0
    messages: int = 0
    refused: int = 0  # connections the server closed (or refused at the HTTP upgrade)
    explained: int = 0  # of those, how many got an error message (or an HTTP error body)
    unexplained: list[str] = field(default_factory=list)  # what was sent on the ones that were not
    kinds: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def merge(self, other: FuzzStats) -> None:
        self.connections += other.connections
        self.messages += other.messages
        self.refused += other.refused
        self.explained += other.explained
        self.unexplained += other.unexplained
        self.kinds.update(other.kinds)
        self.statuses.update(other.statuses)
        self.reasons.update(other.reasons)

    def count_close(self, closed: bool, errors: list[Any], what: str) -> None:
        """Count a connection the server closed: explained when an error message came first."""
        if not closed:
            return
        self.refused += 1
        if errors:
            self.explained += 1
            self.reasons[_reason(errors[0])] += 1
        else:
            self.unexplained.append(what)


def rss_mb() -> float:
    """This process's resident memory in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def settle_threads(baseline: int, timeout: float, poll: float) -> int:
    """Wait for worker threads to finish; returns the thread count (the baseline or what was left)."""
    deadline = time.monotonic() + timeout
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(poll)
    return threading.active_count()


def opus_pages(n: int = 8, seed: int = 0) -> list[bytes]:
    """``n`` valid 80 ms Ogg/Opus pages of noise (one stream, so they decode in order)."""
    rng = np.random.default_rng(seed)
    writer = sphn.OpusStreamWriter(SAMPLE_RATE)
    pages: list[bytes] = []
    while len(pages) < n:
        data = writer.append_pcm((0.1 * rng.standard_normal(FRAME_SIZE)).astype(np.float32))
        if data:
            pages.append(data)
    return pages


def random_message(rng: random.Random, pages: list[bytes], max_bytes: int) -> tuple[str, bytes | str]:
    """One message and its name: valid, malformed or oversized, of every kind (and beyond kind 6)."""
    page = rng.choice(pages)
    junk = rng.randbytes(rng.randint(0, 300))
    flipped = bytearray(page)
    for _ in range(rng.randint(1, 8)):
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    controls = "".join(chr(rng.randrange(0, 32)) for _ in range(20))
    cases: list[tuple[str, bytes | str]] = [
        ("audio", protocol.audio(page)),
        ("audio_garbage", b"\x01" + junk),
        ("audio_truncated", b"\x01" + page[: rng.randint(1, len(page) - 1)]),
        ("audio_bitflip", b"\x01" + bytes(flipped)),
        ("kind_unknown", bytes([rng.randint(7, 255)]) + junk),
        ("empty", b""),
        ("handshake", b"\x00" + rng.randbytes(rng.randint(0, 16))),
        ("text", protocol.text("hello " + controls)),
        ("text_bad_utf8", b"\x02\xff\xfe" + junk),
        ("control", b"\x03" + rng.randbytes(rng.randint(0, 3))),
        ("control_restart", protocol.control(protocol.Control.RESTART)),
        ("metadata", protocol.metadata({"k": controls})),
        ("metadata_bad", b"\x04{" + junk),
        ("error_text", protocol.error("client trouble\n" + controls * rng.randint(1, 100))),
        ("error_big", protocol.error("E" * (max_bytes - 1))),
        ("ping", protocol.ping()),
        ("ping_payload", protocol.ping() + junk),
        ("oversized", b"\x01" + bytes(max_bytes + rng.randint(0, max_bytes))),
        ("far_oversized", b"\x01" + bytes(4 * max_bytes + rng.randint(1, max_bytes))),
        ("text_frame", "hello as a websocket text frame"),
    ]
    weights = [30, 3, 3, 3, 3, 1, 2, 3, 2, 3, 1, 3, 2, 3, 1, 10, 2, 1, 1, 1]
    return rng.choices(cases, weights)[0]


async def _finish(
    ws: aiohttp.ClientWebSocketResponse, wait: float, ping: bool = True
) -> tuple[bool, list[str]]:
    """Ping, then read until the pong (still open: False) or the server's close (True); its errors."""
    errors: list[str] = []
    if ping:
        with contextlib.suppress(Exception):
            await ws.send_bytes(protocol.ping())
    try:
        async with asyncio.timeout(wait):
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                    continue
                if msg.data[0] == ERROR:
                    errors.append(msg.data[1:].decode("utf-8", "replace"))
                elif msg.data == protocol.ping() and not errors:
                    return False, errors
    except TimeoutError:
        return False, errors
    return True, errors


async def fuzz_connection(
    session: aiohttp.ClientSession,
    url: str,
    rng: random.Random,
    pages: list[bytes],
    *,
    token: str,
    max_bytes: int,
    idle_seconds: float = 0.0,
) -> FuzzStats:
    """One connection of a random style; returns its stats (one connection's worth)."""
    stats = FuzzStats(connections=1)
    style = rng.choices(["fuzz", "burst", "pre_handshake", "wrong_token", "silent"], [60, 8, 12, 15, 5])[0]
    if style == "silent" and idle_seconds <= 0:
        style = "fuzz"
    stats.kinds[f"conn:{style}"] += 1
    sent: list[str] = []
    params = {"token": token if style != "wrong_token" else f"guess-{rng.randrange(10**9)}"}
    try:
        async with session.ws_connect(
            url, params=params, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(30)
        ) as ws:
            first = None if style == "pre_handshake" else await ws.receive(timeout=30)
            if (
                first is not None
                and first.type == aiohttp.WSMsgType.BINARY
                and first.data[:1] == bytes([ERROR])
            ):
                stats.refused += 1  # e.g. the server is full: explained
                stats.explained += 1
                stats.reasons[_reason(first.data[1:].decode("utf-8", "replace"))] += 1
                return stats
            # The server may close while we are still sending; what it sent first is read by _finish.
            with contextlib.suppress(aiohttp.ClientConnectionError, ConnectionResetError):
                await _send(ws, style, rng, pages, max_bytes, sent, stats)
            stats.messages += len(sent)
            silent = style == "silent"  # sends nothing at all: the idle timeout must close it
            closed, errors = await _finish(ws, wait=idle_seconds + 10.0 if silent else 10.0, ping=not silent)
    except aiohttp.WSServerHandshakeError as exc:
        stats.refused += 1
        stats.statuses[exc.status] += 1
        stats.explained += exc.status in (401, 429)  # both carry a JSON error body
        return stats
    stats.count_close(closed, errors, f"{style}: {sent[-5:]}")
    return stats


async def _send(
    ws: aiohttp.ClientWebSocketResponse,
    style: str,
    rng: random.Random,
    pages: list[bytes],
    max_bytes: int,
    sent: list[str],
    stats: FuzzStats,
) -> None:
    if style == "pre_handshake":
        sent.append("audio")
        await ws.send_bytes(protocol.audio(pages[0]))
    elif style == "burst":
        for _ in range(300):
            sent.append("ping")
            await ws.send_bytes(protocol.ping())
    elif style == "fuzz":
        for _ in range(rng.randint(1, 60)):
            name, message = random_message(rng, pages, max_bytes)
            sent.append(name)
            stats.kinds[name] += 1
            if isinstance(message, str):
                await ws.send_str(message)
            else:
                await ws.send_bytes(message)
            if ws.closed:
                break


def _reason(error: str) -> str:
    """An error message's category: its first words, without numbers or the variable tail."""
    head = error.split(":")[0].split(";")[0].split(",")[0]
    return "".join(c for c in head if not c.isdigit()).strip()[:60]


async def raw_frame_connection(host: str, port: int, token: str, frame: bytes) -> tuple[bool, list[str]]:
    """Upgrade by hand, send one raw (possibly malformed) websocket frame, then a good ping.

    Returns (whether the server closed, the error messages it sent). aiohttp's client cannot send a
    broken frame, so this speaks RFC 6455 directly.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /api/chat?token={token} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        async with asyncio.timeout(15):
            head = await reader.readuntil(b"\r\n\r\n")
            if b" 101 " not in head.split(b"\r\n")[0]:
                return True, [head.decode("latin-1")]
            first = await _read_frame(reader)  # the handshake (or "server is full")
            if first and first[1][:1] == bytes([ERROR]):
                return True, [first[1][1:].decode("utf-8", "replace")]
            writer.write(frame + masked_frame(0x2, protocol.ping()))
            errors: list[str] = []
            while (got := await _read_frame(reader)) is not None:
                opcode, payload = got
                if opcode == 0x8:
                    return True, errors
                if opcode == 0x2 and payload[:1] == bytes([ERROR]):
                    errors.append(payload[1:].decode("utf-8", "replace"))
                elif opcode == 0x2 and payload == protocol.ping() and not errors:
                    return False, errors
            return True, errors
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def masked_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, length: int | None = None
) -> bytes:
    """A client frame; ``length`` overrides the announced payload length (to announce a lie)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    try:
        b0, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", await reader.readexactly(8))[0]
        return b0 & 0x0F, await reader.readexactly(n)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


BROKEN_FRAMES: dict[str, bytes] = {
    "reserved_opcode": masked_frame(0x3, b"\x06"),
    "rsv_bits": masked_frame(0x2, b"\x06", rsv=0b111),
    "fragmented_ping": masked_frame(0x9, b"", fin=False),
    "orphan_continuation": masked_frame(0x0, b"\x06"),
    "huge_length": masked_frame(0x2, b"\x01" * 16, length=1 << 40),
    "bad_close_code": masked_frame(0x8, struct.pack(">H", 999)),
    "text_bad_utf8": masked_frame(0x1, b"\xff\xfe"),
}


async def run_fuzz(
    url: str,
    *,
    connections: int,
    token: str,
    max_bytes: int,
    seed: int = 0,
    concurrency: int = 8,
    idle_seconds: float = 0.0,
) -> FuzzStats:
    """``connections`` fuzz connections, ``concurrency`` at a time, to ``url`` (the ``/api/chat`` URL)."""
    pages = opus_pages()
    stats = FuzzStats()
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            async with gate:
                rng = random.Random(seed * 1_000_003 + i)
                stats.merge(
                    await fuzz_connection(
                        session, url, rng, pages, token=token, max_bytes=max_bytes, idle_seconds=idle_seconds
                    )
                )

        await asyncio.gather(*(one(i) for i in range(connections)))
    return stats


async def run_broken_frames(host: str, port: int, token: str) -> FuzzStats:
    """Each of :data:`BROKEN_FRAMES` on its own connection; a closed one must have been explained."""
    stats = FuzzStats()
    for name, frame in BROKEN_FRAMES.items():
        closed, errors = await raw_frame_connection(host, port, token, frame)
        stats.connections += 1
        stats.messages += 1
        stats.kinds[f"frame:{name}"] += 1
        stats.count_close(closed, errors, f"raw frame: {name}")
    return stats
