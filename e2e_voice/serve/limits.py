"""Per-client budgets: message rate, connections, wrong tokens, generated audio.

Every budget is keyed by a client key (see ``ChatServer._client_key``) and forgets keys that have
nothing left to remember, so a stream of new addresses cannot grow the server's memory without bound.
"""

from __future__ import annotations

import time
from collections import deque


class TokenBucket:
    """A refilling budget of ``rate`` events per second, at most ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.level, self.stamp = float(burst), time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> bool:
        self.refill(time.monotonic())
        if self.level >= 1.0:
            self.level -= 1.0
            return True
        return False


class BucketPool:
    """One :class:`TokenBucket` per client, shared by all of that client's live connections.

    A client's bucket outlives its connections (reconnecting does not refill it) until it has refilled
    to full: then a fresh one is the same, so a sweep drops it, which bounds the pool by the clients
    active in the last ``burst / rate`` seconds.
    """

    def __init__(self, rate: float, burst: int, sweep_every: int = 1024) -> None:
        self.rate, self.burst, self.sweep_every = rate, burst, sweep_every
        self.buckets: dict[str, TokenBucket] = {}
        self.users: dict[str, int] = {}

    def acquire(self, client: str) -> TokenBucket:
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= self.sweep_every:
                self.sweep()
            bucket = self.buckets[client] = TokenBucket(self.rate, self.burst)
        self.users[client] = self.users.get(client, 0) + 1
        return bucket

    def release(self, client: str) -> None:
        left = self.users.get(client, 1) - 1
        if left > 0:
            self.users[client] = left
        else:
            self.users.pop(client, None)

    def sweep(self) -> None:
        now = time.monotonic()
        for client, bucket in list(self.buckets.items()):
            bucket.refill(now)
            if client not in self.users and bucket.level >= bucket.burst:
                del self.buckets[client]


class SlidingWindow:
    """At most ``limit`` events per key in any ``window`` seconds (``limit <= 0``: no limit)."""

    def __init__(self, limit: int, window: float = 60.0, sweep_every: int = 1024) -> None:
        self.limit, self.window, self.sweep_every = limit, window, sweep_every
        self.events: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self.events.get(key)
        if events is None:
            if len(self.events) >= self.sweep_every:
                self.sweep(now)
            events = self.events[key] = deque()
        while events and now - events[0] >= self.window:
            events.popleft()
        return events

    def full(self, key: str) -> bool:
        """Whether ``key`` has used its budget (without counting an event)."""
        return self.limit > 0 and len(self._recent(key, time.monotonic())) >= self.limit

    def record(self, key: str) -> None:
        if self.limit > 0:
            now = time.monotonic()
            self._recent(key, now).append(now)

    def allow(self, key: str) -> bool:
        """Count an event for ``key`` if it is within budget; False (and nothing counted) if not."""
        if self.full(key):
            return False
        self.record(key)
        return True

    def sweep(self, now: float) -> None:
        for key, events in list(self.events.items()):
            if not events or now - events[-1] >= self.window:
                del self.events[key]


class AudioLedger:
    """Generated audio per client over a rolling hour, in one-minute buckets."""

    def __init__(self, cap_seconds: float, sweep_every: int = 1024) -> None:
        self.cap, self.sweep_every = cap_seconds, sweep_every
        self.ledgers: dict[str, list[tuple[float, float]]] = {}

    def used(self, client: str) -> float:
        now = time.monotonic()
        ledger = [(t, sec) for t, sec in self.ledgers.get(client, []) if now - t < 3600.0]
        if ledger:
            self.ledgers[client] = ledger
        else:
            self.ledgers.pop(client, None)
        return sum(sec for _, sec in ledger)

    def charge(self, client: str, seconds: float) -> bool:
        """Add ``seconds`` for ``client``; False once the client is over its cap (always True when off)."""
        if self.cap <= 0:
            return True
        now = time.monotonic()
        if client not in self.ledgers and len(self.ledgers) >= self.sweep_every:
            for key in list(self.ledgers):
                self.used(key)
        ledger = self.ledgers.setdefault(client, [])
        if ledger and now - ledger[-1][0] < 60.0:
            ledger[-1] = (ledger[-1][0], ledger[-1][1] + seconds)
        else:
            ledger.append((now, seconds))
        return self.used(client) <= self.cap
