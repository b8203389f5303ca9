"""Moshi's binary websocket protocol: every message starts with one byte, its kind.

Kinds (moshi ``rust/protocol.md``): 0 handshake (u32 protocol version, u32 model version, little endian),
1 audio (Ogg/Opus pages, 24 kHz mono), 2 text (UTF-8), 3 control (one byte: 0 start, 1 end turn, 2 pause,
3 restart), 4 metadata (UTF-8 JSON), 5 error (UTF-8), 6 ping (no payload).
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 0


class Kind(enum.IntEnum):
    HANDSHAKE = 0
    AUDIO = 1
    TEXT = 2
    CONTROL = 3
    METADATA = 4
    ERROR = 5
    PING = 6


class Control(enum.IntEnum):
    START = 0
    END_TURN = 1
    PAUSE = 2
    RESTART = 3


class ProtocolError(ValueError):
    """A message that breaks the protocol; the message says what was wrong."""


@dataclass(frozen=True)
class Message:
    kind: Kind
    payload: bytes


def parse(data: bytes) -> Message:
    """Split a websocket binary message into its kind and payload, validating what can be validated."""
    if not data:
        raise ProtocolError("empty message: every message starts with a kind byte (0-6)")
    try:
        kind = Kind(data[0])
    except ValueError:
        raise ProtocolError(f"unknown message kind {data[0]}: expected 0-6 (moshi protocol)") from None
    payload = bytes(data[1:])
    if kind == Kind.CONTROL and (len(payload) != 1 or payload[0] not in {c.value for c in Control}):
        raise ProtocolError(f"control message needs one byte 0-3, got {payload[:8]!r}")
    if kind in (Kind.TEXT, Kind.METADATA, Kind.ERROR):
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"{kind.name.lower()} message is not valid UTF-8") from None
        if kind == Kind.METADATA:
            try:
                json.loads(text)
            except ValueError:
                raise ProtocolError("metadata message is not valid JSON") from None
    return Message(kind, payload)


def handshake(model_version: int = 0) -> bytes:
    return bytes([Kind.HANDSHAKE]) + struct.pack("<II", PROTOCOL_VERSION, model_version)


def audio(ogg_bytes: bytes) -> bytes:
    return bytes([Kind.AUDIO]) + ogg_bytes


def text(s: str) -> bytes:
    return bytes([Kind.TEXT]) + s.encode("utf-8")


def error(s: str) -> bytes:
    return bytes([Kind.ERROR]) + s.encode("utf-8")


def metadata(obj: dict[str, Any]) -> bytes:
    return bytes([Kind.METADATA]) + json.dumps(obj).encode("utf-8")


def control(c: Control) -> bytes:
    return bytes([Kind.CONTROL, c])


def ping() -> bytes:
    return bytes([Kind.PING])
