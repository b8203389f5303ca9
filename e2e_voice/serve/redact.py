"""Keeping secrets and client-controlled text out of the server's logs and metrics.

Tokens travel in the URL (``?token=``, the only way a browser's websocket can send one), so the access
log must not write the URL as it came; clients choose the text of their error messages, so that text is
escaped, cut short and rate-limited before it reaches a log line.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from urllib.parse import unquote_plus

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from e2e_voice.serve.limits import TokenBucket

REDACTED = "REDACTED"
_SECRET_PARAMS = {"token", "access_token"}
_SALT = secrets.token_bytes(16)  # per process: published ids cannot be matched to a token or an IP


def public_id(client_key: str) -> str:
    """A short, salted hash of a client key, safe to publish (``/metrics``) and to log."""
    return "client-" + hashlib.blake2b(client_key.encode(), key=_SALT, digest_size=6).hexdigest()


def redact_url(path_qs: str) -> str:
    """``path?token=x&a=1`` -> ``path?token=REDACTED&a=1``.

    Names are compared as the server reads them (percent-decoded, any case), so ``?to%6Ben=x`` is
    redacted too; every occurrence is, and a value-less ``?token`` is left as it is (nothing to hide).
    """
    path, sep, query = path_qs.partition("?")
    if not sep:
        return path_qs
    parts = re.split(r"([&;])", query)
    for i, part in enumerate(parts):
        name, eq, _ = part.partition("=")
        if eq and unquote_plus(name).strip().lower() in _SECRET_PARAMS:
            parts[i] = f"{name}={REDACTED}"
    return f"{path}?{''.join(parts)}"


def printable(text: str, limit: int = 200) -> str:
    """Client text made safe for one log line: control characters escaped, at most ``limit`` characters."""
    cut = text[:limit]
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return safe + (f"... ({len(text)} characters)" if len(text) > limit else "")


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access log line (``remote "METHOD path HTTP/x.y" status bytes time``), token redacted.

    The Referer is left out on purpose: the browser page's own requests would carry ``?token=`` in it.
    """

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        version = request.version
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.6f',
            request.remote,
            request.method,
            redact_url(request.raw_path),
            version.major,
            version.minor,
            response.status,
            response.body_length,
            time,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class LogBudget:
    """Lets through at most ``rate`` lines per second (``burst`` at once) and counts what it held back."""

    def __init__(self, rate: float = 1.0, burst: int = 10) -> None:
        self.bucket = TokenBucket(rate, burst)
        self.suppressed = 0

    def take(self) -> tuple[bool, int]:
        """(whether to log now, how many lines were held back since the last one logged)."""
        if not self.bucket.take():
            self.suppressed += 1
            return False, 0
        held, self.suppressed = self.suppressed, 0
        return True, held
