"""What a bus backend provides: pub/sub on named channels plus a few expiring-hash operations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

#: Called by a backend for every message on a subscribed channel, in publish order per channel.
Receiver = Callable[[str, bytes], Awaitable[None]]


class BusUnavailable(ConnectionError):
    """The bus backend could not be reached (after its bounded retries)."""


class Backend(Protocol):
    #: How many times the subscription connection was lost and re-established.
    reconnects: int

    async def connect(self, receiver: Receiver) -> None: ...

    async def disconnect(self) -> None: ...

    async def wait_ready(self, reconnects: int = 0) -> None:
        """Wait until subscriptions are live (after at least `reconnects` reconnections)."""
        ...

    async def publish(self, channel: str, data: bytes) -> int:
        """Send `data` to `channel`; returns how many processes received it."""
        ...

    async def subscribe(self, channel: str) -> None:
        """Subscribe; returns once the backend has confirmed the subscription."""
        ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def hash_set(self, key: str, fields: Mapping[str, bytes], ttl: float) -> None:
        """Set fields of the hash at `key` and (re)start its time to live."""
        ...

    async def hash_get(self, key: str) -> dict[str, bytes] | None: ...

    async def expire(self, keys: Iterable[str], ttl: float) -> None: ...

    async def delete(self, key: str) -> None: ...
