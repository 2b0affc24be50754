"""What a bus backend provides: pub/sub, per-session logs appended atomically with the publish,
and a few expiring-hash operations for the registry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

#: Called by a backend for every frame on a subscribed channel, in publish order per channel.
Receiver = Callable[[str, bytes], Awaitable[None]]
#: Called once every channel is subscribed again after a lost subscription: frames published
#: meanwhile were missed (the session logs have them), and later frames are received from now on.
Restored = Callable[[], Awaitable[None]]


class Backend(Protocol):
    #: How many times the subscription connection was lost and re-established.
    reconnects: int

    async def connect(self, receiver: Receiver, restored: Restored) -> None: ...

    async def disconnect(self) -> None: ...

    async def wait_ready(self, reconnects: int = 0) -> None:
        """Wait until subscriptions are live (after at least `reconnects` reconnections)."""
        ...

    async def publish(self, channel: str, data: bytes) -> int:
        """Publish `frame("", data)`; returns how many processes received it."""
        ...

    async def send(
        self,
        info_key: str,
        log_key: str,
        channel: str,
        data: bytes,
        *,
        message_id: str,
        durable: bool,
        maxlen: int,
        ttl: float,
    ) -> tuple[str, int] | None:
        """In one atomic step: unless `info_key` is missing (then None), append `data` to the log
        when `durable`, and publish `frame(offset, data)`. Returns (offset or "", receivers)."""
        ...

    async def read_log(self, key: str, after: str, count: int) -> list[tuple[str, bytes]]:
        """At most `count` log entries with offsets after `after`, oldest first."""
        ...

    async def log_bounds(self, info_key: str, log_key: str) -> tuple[str, str]:
        """(first offset still in the log or "", last offset ever appended or "0-0")."""
        ...

    async def subscribe(self, channel: str) -> None:
        """Subscribe; returns once the backend has confirmed the subscription."""
        ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def hash_set(self, key: str, fields: Mapping[str, bytes], ttl: float) -> None:
        """Set fields of the hash at `key` and (re)start its time to live."""
        ...

    async def hash_get(self, key: str) -> dict[str, bytes] | None: ...

    async def hash_delete(self, key: str, field: str) -> None: ...

    async def list_append(self, key: str, value: bytes, maxlen: int) -> None:
        """Append to the list at `key`, keeping its last `maxlen` items."""
        ...

    async def list_items(self, key: str) -> list[bytes]: ...

    async def claim(self, key: str, value: bytes, ttl: float) -> bytes | None:
        """Set `key` to `value` unless it exists; returns the existing value, or None if claimed."""
        ...

    async def store(self, key: str, value: bytes, ttl: float) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def count(self, key: str, ttl: float) -> int:
        """Increment the counter at `key` (created with `ttl`) and return its new value."""
        ...

    async def expire(self, keys: Iterable[str], ttl: float) -> None: ...

    async def delete(self, *keys: str) -> None: ...
