"""The bus: envelopes published to per-target channels, with the backend chosen by URL scheme."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

from bus.backend import Backend
from bus.envelope import Envelope, EnvelopeError, Target
from bus.memory_backend import MemoryBackend
from bus.redis_backend import RedisBackend
from bus.registry import SessionRegistry
from bus.settings import Settings, get_settings

log = logging.getLogger("switchboard.bus")

Handler = Callable[[Envelope], Awaitable[None]]


@dataclass(slots=True)
class BusStats:
    """Counters of one process's bus; tests and /metrics-style endpoints read them."""

    published: int = 0
    received: int = 0
    malformed: int = 0
    unhandled: int = 0
    failed: int = 0


class Bus:
    """One process's connection to the bus: `async with Bus() as bus: await bus.publish(...)`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.backend = _backend_for(self.settings)
        self.registry = SessionRegistry(self.backend, self.settings)
        self.stats = BusStats()
        self._handlers: dict[str, Handler] = {}

    async def __aenter__(self) -> Bus:
        await self.backend.connect(self._receive)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.backend.disconnect()

    @property
    def reconnects(self) -> int:
        return self.backend.reconnects

    async def wait_ready(self, reconnects: int = 0) -> None:
        """Wait until subscriptions are live, after at least `reconnects` reconnections (readiness)."""
        await self.backend.wait_ready(reconnects)

    def channel(self, target: Target) -> str:
        if target.kind == "broadcast":
            return f"{self.settings.key_prefix}:broadcast"
        return f"{self.settings.key_prefix}:{target.kind}:{{{target.id}}}"

    async def publish(self, envelope: Envelope) -> int:
        """Publish once, encoded once; returns how many processes received it live."""
        data = envelope.encode()
        if len(data) > self.settings.max_envelope_bytes:
            raise EnvelopeError(
                f"envelope of {len(data)} bytes exceeds the limit of "
                f"{self.settings.max_envelope_bytes} (SWITCHBOARD_MAX_ENVELOPE_BYTES)"
            )
        received = await self.backend.publish(self.channel(envelope.target), data)
        self.stats.published += 1
        return received

    async def subscribe(self, target: Target, handler: Handler) -> None:
        """Deliver envelopes for `target` to `handler`; returns once the subscription is live."""
        channel = self.channel(target)
        self._handlers[channel] = handler
        await self.backend.subscribe(channel)

    async def unsubscribe(self, target: Target) -> None:
        channel = self.channel(target)
        self._handlers.pop(channel, None)
        await self.backend.unsubscribe(channel)

    async def _receive(self, channel: str, data: bytes) -> None:
        # Never raises: one bad message or failing handler must not stop the listener.
        try:
            envelope = Envelope.decode(data, max_bytes=self.settings.max_envelope_bytes)
            if self.channel(envelope.target) != channel:
                raise EnvelopeError(f"envelope for {envelope.target} arrived on {channel}")
        except EnvelopeError as exc:
            self.stats.malformed += 1
            log.warning("dropped a malformed message on %s: %s", channel, exc)
            return
        self.stats.received += 1
        handler = self._handlers.get(channel)
        if handler is None:
            self.stats.unhandled += 1
            return
        try:
            await handler(envelope)
        except Exception:
            self.stats.failed += 1
            log.exception("handler for %s failed on envelope %s", channel, envelope.id)


def _backend_for(settings: Settings) -> Backend:
    url = settings.bus_url
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBackend()
    if scheme in ("redis", "rediss", "unix"):
        home = f"{settings.key_prefix}:replica:{{{settings.replica_id}}}"
        return RedisBackend(url, home)
    raise ValueError(f"unsupported bus URL scheme {scheme!r}: use redis://, rediss:// or memory://")
