"""The server's settings (the ``serve`` config group) and the counters it publishes on ``/metrics``."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from e2e_voice.constants import FRAME_SIZE, SAMPLE_RATE

STATIC_DIR = Path(__file__).parent / "static"
FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE


def normalize_tokens(tokens: object) -> tuple[str, ...]:
    """The accepted tokens as a tuple of non-empty strings.

    A single string is one token: ``serve.tokens=secret`` on Hydra's command line arrives as a string,
    and ``tuple("secret")`` would have accepted each of its letters as a token. Anything else that is
    not a list of strings is refused with the setting's name, rather than turned into something odd.
    """
    if tokens is None:
        return ()
    if isinstance(tokens, str):
        items: list[object] = [tokens]
    elif (
        isinstance(tokens, Iterable) and not isinstance(tokens, (bytes, dict)) and not hasattr(tokens, "keys")
    ):
        items = list(tokens)
    else:
        raise ValueError(
            f"serve.tokens must be a string or a list of strings, got {type(tokens).__name__};"
            " e.g. serve.tokens=secret or 'serve.tokens=[secret1,secret2]'"
        )
    for i, token in enumerate(items):
        if not isinstance(token, str):
            raise ValueError(
                f"serve.tokens[{i}] must be a string, got {type(token).__name__}; quote it:"
                f" 'serve.tokens=[\"{token}\"]'"
            )
        if not token:
            raise ValueError(f"serve.tokens[{i}] is empty: an empty token would accept any client")
    return tuple(items)  # type: ignore[arg-type]


@dataclass
class ServeSettings:
    """Server settings (the ``serve`` config group maps onto these fields; docs/serving.md explains them).

    Args:
        host: interface to bind.
        port: TCP port.
        max_conversations: live conversations at once; more are refused with an error message.
        max_conversation_seconds: user audio per conversation before the server ends it.
        max_message_bytes: larger websocket messages are refused (an 80 ms Opus page is ~300 bytes).
        tokens: accepted auth tokens (``?token=`` or ``Authorization: Bearer``); empty disables auth. A
            single string is one token.
        messages_per_second: sustained messages per client (token bucket shared by the client's
            connections); 0 disables the limit.
        burst: token-bucket size for ``messages_per_second``.
        connections_per_minute: new connections per client per minute; 0 disables the limit.
        audio_seconds_per_client_hour: generated audio a client may receive per rolling hour; 0 disables.
        auth_failures_per_minute: wrong or missing tokens per IP per minute before that IP is refused
            (429) for the rest of the minute; 0 disables.
        idle_timeout_seconds: a conversation that sends no audio for this long after the handshake is
            closed, so a silent connection cannot hold a slot; 0 disables.
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
    auth_failures_per_minute: int = 10
    idle_timeout_seconds: float = 30.0
    model_version: int = 0
    static_dir: str | None = str(STATIC_DIR)

    def __post_init__(self) -> None:
        if isinstance(self.max_conversations, bool) or not isinstance(self.max_conversations, int):
            n = self.max_conversations
            raise ValueError(f"serve.max_conversations must be a whole number, got {n!r}")
        if self.max_conversations < 1:
            raise ValueError(f"serve.max_conversations must be >= 1, got {self.max_conversations}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"serve.max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        for name in ("idle_timeout_seconds", "auth_failures_per_minute", "messages_per_second"):
            if getattr(self, name) < 0:
                raise ValueError(f"serve.{name} must be >= 0 (0 disables it), got {getattr(self, name)}")
        self.tokens = normalize_tokens(self.tokens)


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
