"""What a bus backend provides, in two small contracts, and the backend of a URL, loaded lazily.

A `Transport` moves frames: pub/sub, and the per-session log appended in the same atomic step as the
publish. A `Store` keeps the registry's expiring hashes, lists, counters and claims. Redis and the
in-memory bus implement both; a new transport implements `Transport` and reuses a store.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

#: Called by a transport for every frame on a subscribed channel, in publish order per channel.
Receiver = Callable[[str, bytes], Awaitable[None]]
#: Called once every channel is subscribed again after a lost subscription: frames published
#: meanwhile were missed (the session logs have them), and later frames are received from now on.
Restored = Callable[[], Awaitable[None]]


class Transport(Protocol):
    #: How many times the subscription connection was lost and re-established.
    reconnects: int

    async def connect(self, receiver: Receiver, restored: Restored) -> None: ...

    async def disconnect(self) -> None: ...

    async def wait_ready(self, reconnects: int = 0) -> None:
        """Wait until subscriptions are live (after at least `reconnects` reconnections)."""
        ...

    async def publish(self, channel: str, data: bytes) -> int:
        """Publish `frame("", "", data)`; returns how many processes received it."""
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
        max_bytes: int,
        max_age: float,
    ) -> tuple[str, str, int] | None:
        """In one atomic step: unless the session record `info_key` is missing (then None), append
        `data` to the log when `durable` (dropping the oldest entries beyond `maxlen` entries,
        `max_bytes` bytes or `max_age` seconds; the newest always stays), and publish
        `frame(offset, epoch, data)`. Returns (offset or "", the log's epoch, receivers)."""
        ...

    async def read_log(self, key: str, after: str, count: int) -> list[tuple[str, bytes]]:
        """At most `count` log entries with offsets after `after`, oldest first."""
        ...

    async def log_bounds(self, info_key: str, log_key: str) -> tuple[str, str, str]:
        """(first offset still in the log or "", last offset ever appended or "0-0", epoch or "")."""
        ...

    async def subscribe(self, channel: str) -> None:
        """Subscribe; returns once the backend has confirmed the subscription."""
        ...

    async def unsubscribe(self, channel: str) -> None: ...


class Store(Protocol):
    """Keys with times to live; `ttl=None` means none (the key stays until deleted)."""

    async def hash_set(self, key: str, fields: Mapping[str, bytes], ttl: float | None) -> None:
        """Set fields of the hash at `key` and (re)start its time to live (or remove it: None)."""
        ...

    async def hash_set_if(
        self, key: str, field: str, expected: bytes, fields: Mapping[str, bytes], ttl: float | None
    ) -> bool:
        """Like hash_set, atomically, only if `field` of the existing hash is `expected`."""
        ...

    async def hash_get(self, key: str, fields: list[str] | None = None) -> dict[str, bytes] | None:
        """The hash (or those of its `fields` that are set); None if nothing is."""
        ...

    async def hash_delete(self, key: str, field: str) -> None: ...

    async def list_append(self, key: str, value: bytes, *, maxlen: int, max_bytes: int, ttl: float) -> None:
        """Append to the list at `key`, keeping its last items within `maxlen` items and `max_bytes`
        bytes (the newest is always kept), and (re)start its time to live."""
        ...

    async def list_items(self, key: str) -> list[bytes]: ...

    async def set_add(self, key: str, member: str) -> None: ...

    async def set_remove(self, key: str, member: str) -> None: ...

    async def set_members(self, key: str) -> list[str]: ...

    async def claim(self, key: str, value: bytes, ttl: float) -> bytes | None:
        """Set `key` to `value` unless it exists; returns the existing value, or None if claimed."""
        ...

    async def store(self, key: str, value: bytes, ttl: float) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def count(self, key: str, ttl: float) -> int:
        """Increment the counter at `key` (created with `ttl`) and return its new value."""
        ...

    async def expire(self, keys: Iterable[str], ttl: float | None) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def server_id(self) -> str:
        """Who holds the data: changes when the server restarts or fails over (data may be lost)."""
        ...


class Backend(Transport, Store, Protocol):
    """A backend that is both (Redis, memory)."""


#: URL scheme -> "module:class"; a backend's module (and its client library) loads on first use.
_SCHEMES = {
    "memory": "bus.memory_backend:MemoryBackend",
    "redis": "bus.redis_backend:RedisBackend",
    "rediss": "bus.redis_backend:RedisBackend",
    "unix": "bus.redis_backend:RedisBackend",
    "redis+sentinel": "bus.redis_backend:RedisBackend",
    "redis+cluster": "bus.cluster_backend:ClusterBackend",
}


def open_backend(url: str, home_channel: str, *, timeout: float, max_connections: int) -> Backend:
    """The backend for `url`; `home_channel` is this process's own channel, subscribed first.
    Every command answers within `timeout` seconds or raises BusUnavailable."""
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        supported = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ValueError(f"unsupported bus URL scheme {scheme!r}: use one of {supported}")
    module, _, name = _SCHEMES[scheme].partition(":")
    kind = getattr(importlib.import_module(module), name)
    backend: Backend = kind(url, home_channel, timeout=timeout, max_connections=max_connections)
    return backend
