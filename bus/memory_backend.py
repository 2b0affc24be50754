"""`memory://`: the embedded single-process bus, shared by every event loop and thread of the process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Mapping

from bus.backend import Receiver

_Message = tuple[str, bytes]
_Subscriber = tuple[asyncio.AbstractEventLoop, "asyncio.Queue[_Message]"]


class _Hub:
    """Process-wide channels and hashes; a lock makes them safe to reach from other threads' loops."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.channels: dict[str, dict[int, _Subscriber]] = {}
        self.hashes: dict[str, tuple[float, dict[str, bytes]]] = {}

    def live_hash(self, key: str, now: float) -> dict[str, bytes] | None:
        entry = self.hashes.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self.hashes[key]
            return None
        return entry[1]


_hub = _Hub()


class MemoryBackend:
    reconnects = 0

    def __init__(self) -> None:
        self._subscriber: _Subscriber | None = None
        self._drain: asyncio.Task[None] | None = None

    async def connect(self, receiver: Receiver) -> None:
        queue: asyncio.Queue[_Message] = asyncio.Queue()
        self._subscriber = (asyncio.get_running_loop(), queue)
        self._drain = asyncio.create_task(_drain(queue, receiver), name="switchboard-memory-bus")

    async def wait_ready(self, reconnects: int = 0) -> None:
        """The in-process bus is ready once connected and never reconnects."""

    async def disconnect(self) -> None:
        with _hub.lock:
            for subscribers in _hub.channels.values():
                subscribers.pop(id(self), None)
        self._subscriber = None
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)

    async def publish(self, channel: str, data: bytes) -> int:
        with _hub.lock:
            subscribers = list(_hub.channels.get(channel, {}).values())
        for loop, queue in subscribers:
            loop.call_soon_threadsafe(queue.put_nowait, (channel, data))
        return len(subscribers)

    async def subscribe(self, channel: str) -> None:
        assert self._subscriber is not None, "connect() first"
        with _hub.lock:
            _hub.channels.setdefault(channel, {})[id(self)] = self._subscriber

    async def unsubscribe(self, channel: str) -> None:
        with _hub.lock:
            subscribers = _hub.channels.get(channel, {})
            subscribers.pop(id(self), None)
            if not subscribers:
                _hub.channels.pop(channel, None)

    async def hash_set(self, key: str, fields: Mapping[str, bytes], ttl: float) -> None:
        now = time.monotonic()
        with _hub.lock:
            current = _hub.live_hash(key, now) or {}
            _hub.hashes[key] = (now + ttl, {**current, **fields})

    async def hash_get(self, key: str) -> dict[str, bytes] | None:
        with _hub.lock:
            found = _hub.live_hash(key, time.monotonic())
            return dict(found) if found is not None else None

    async def expire(self, keys: Iterable[str], ttl: float) -> None:
        now = time.monotonic()
        with _hub.lock:
            for key in keys:
                if (found := _hub.live_hash(key, now)) is not None:
                    _hub.hashes[key] = (now + ttl, found)

    async def delete(self, key: str) -> None:
        with _hub.lock:
            _hub.hashes.pop(key, None)


async def _drain(queue: asyncio.Queue[_Message], receiver: Receiver) -> None:
    """One consumer per connection keeps deliveries in publish order, as Redis pub/sub does."""
    while True:
        channel, data = await queue.get()
        await receiver(channel, data)
