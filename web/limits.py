"""Abuse limits of one replica (docs/security.md): handshakes per client address and per user, live
sessions per user, events per socket, and the hook queue of a session. Every refusal is counted."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bus import Settings


class Refused(Exception):
    """A limit refused a request; `retry_after` is in seconds (0: retrying soon will not help)."""

    def __init__(self, reason: str, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.reason, self.message, self.retry_after = reason, message, retry_after


class PerMinute:
    """At most `limit` hits per key in each wall-clock minute (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._minute = 0
        self._hits: Counter[str] = Counter()

    def hit(self, key: str) -> float:
        """0 if allowed, else the seconds until the next minute."""
        if not self.limit:
            return 0.0
        now = time.time()
        minute = int(now // 60)
        if minute != self._minute:  # a new window: forget the old one
            self._minute, self._hits = minute, Counter()
        self._hits[key] += 1
        return 0.0 if self._hits[key] <= self.limit else 60.0 - now % 60


class TokenBucket:
    """`rate` events a second on average, bursts of up to `burst` (rate 0: no limit)."""

    __slots__ = ("_stamp", "_tokens", "_told_until", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._told_until = 0.0

    def take(self) -> float:
        """0 if an event may pass now, else the seconds until one may."""
        if not self.rate:
            return 0.0
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def tell(self, wait: float) -> bool:
        """Whether to tell the client it waits `wait` seconds: once per wait, not per refused event."""
        now = time.monotonic()
        if now < self._told_until:
            return False
        self._told_until = now + wait
        return True


class Limits:
    """The limits a replica enforces, from the settings; `refused` counts refusals by reason."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._by_address = PerMinute(settings.handshakes_per_minute)
        self._by_user = PerMinute(settings.user_handshakes_per_minute)
        self.refused: Counter[str] = Counter()

    def handshake(self, address: str) -> None:
        if wait := self._by_address.hit(address):
            self._refuse("rate_limited", "too many connections from this address", wait)

    def login(self, user: str, live_sessions: int) -> None:
        """A user's handshake: within their rate, and under their live sessions on this replica."""
        if wait := self._by_user.hit(user):
            self._refuse("rate_limited", "too many connections for this user", wait)
        if self._settings.sessions_per_user and live_sessions >= self._settings.sessions_per_user:
            self._refuse("too_many_sessions", "this user has too many live sessions")

    def events(self) -> TokenBucket:
        """A new socket's event bucket."""
        return TokenBucket(self._settings.events_per_second, self._settings.event_burst)

    def _refuse(self, reason: str, message: str, retry_after: float = 0.0) -> None:
        self.refused[reason] += 1
        raise Refused(reason, message, retry_after)


def retry_after_ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class HookQueue:
    """Runs one session's hook calls one at a time, in arrival order; at most `size` wait."""

    __slots__ = ("_runner", "_size", "_spawn", "_waiting")

    def __init__(self, spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]], size: int) -> None:
        self._spawn = spawn
        self._size = size
        #: Made on the first call: an idle session holds no queue (a deque is 600 bytes).
        self._waiting: deque[Callable[[], Awaitable[None]]] | None = None
        self._runner: asyncio.Task[Any] | None = None

    def submit(self, run: Callable[[], Awaitable[None]]) -> bool:
        """Queue `run`; False (nothing queued) when the queue is full."""
        if self._waiting is None:
            self._waiting = deque()
        if len(self._waiting) >= self._size:
            return False
        self._waiting.append(run)
        if self._runner is None:
            self._runner = self._spawn(self._drain())
        return True

    async def _drain(self) -> None:
        try:
            while self._waiting:
                await self._waiting.popleft()()
        finally:
            self._runner = None

    def drop_waiting(self) -> None:
        """The socket left: calls not started yet never run (the one running finishes)."""
        self._waiting = None

    def cancel(self) -> None:
        """The session ended: nothing of it runs any more."""
        self._waiting = None
        if self._runner is not None:
            self._runner.cancel()
