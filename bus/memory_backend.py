"""`memory://`: the embedded single-process bus, shared by every event loop and thread of the process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from bus.backend import Receiver, Restored
from bus.envelope import frame, offset_key

_T = TypeVar("_T")
_Message = tuple[str, bytes]
_Subscriber = tuple[asyncio.AbstractEventLoop, "asyncio.Queue[_Message]"]


@dataclass
class _Log:
    entries: deque[tuple[str, bytes]] = field(default_factory=deque)
    expires_at: float = 0.0


class _Hub:
    """Process-wide channels, logs and hashes; a lock makes them safe to reach from other threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.channels: dict[str, dict[int, _Subscriber]] = {}
        self.hashes: dict[str, tuple[float, dict[str, bytes]]] = {}
        self.logs: dict[str, _Log] = {}
        self.lists: dict[str, tuple[float, deque[bytes]]] = {}
        self._swept = 0.0

    def live_hash(self, key: str, now: float) -> dict[str, bytes] | None:
        entry = self.hashes.get(key)
        if entry is not None and entry[0] <= now:
            del self.hashes[key]
            return None
        return entry[1] if entry else None

    def live_list(self, key: str, now: float) -> tuple[float, deque[bytes]] | None:
        entry = self.lists.get(key)
        if entry is not None and entry[0] <= now:
            del self.lists[key]
            return None
        return entry

    def sweep(self, now: float) -> None:
        """Forget what expired (at most once a second): keys that are never read again go too."""
        if now - self._swept < 1.0 and self._swept:
            return
        self._swept = now
        for key in [k for k, (expires, _) in self.hashes.items() if expires <= now]:
            del self.hashes[key]
        for key in [k for k, (expires, _) in self.lists.items() if expires <= now]:
            del self.lists[key]
        for key in [k for k, log in self.logs.items() if log.expires_at <= now]:
            del self.logs[key]

    def live_log(self, key: str, now: float) -> _Log | None:
        log = self.logs.get(key)
        if log is not None and log.expires_at <= now:
            del self.logs[key]
            return None
        return log

    def publish(self, channel: str, raw: bytes) -> int:
        subscribers = list(self.channels.get(channel, {}).values())
        for loop, queue in subscribers:
            loop.call_soon_threadsafe(queue.put_nowait, (channel, raw))
        return len(subscribers)


_hub = _Hub()


class MemoryBackend:
    reconnects = 0

    def __init__(self, url: str = "memory://", home_channel: str = "") -> None:
        self._subscriber: _Subscriber | None = None
        self._drain: asyncio.Task[None] | None = None

    async def connect(self, receiver: Receiver, restored: Restored) -> None:
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
            return _hub.publish(channel, frame("", data))

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
        ttl: float,
    ) -> tuple[str, int] | None:
        now = time.monotonic()
        with _hub.lock:
            info = _hub.live_hash(info_key, now)
            if info is None:
                return None
            offset = ""
            if durable:  # as the Redis script does: `<n>-0` offsets counted in the registry
                if info.get("last_id") == message_id.encode():
                    return info["last_offset"].decode(), 0
                seq = int(info.get("seq", b"0")) + 1
                offset = f"{seq}-0"
                info.update(seq=str(seq).encode(), last_id=message_id.encode(), last_offset=offset.encode())
                log = _hub.live_log(log_key, now) or _hub.logs.setdefault(log_key, _Log())
                log.entries.append((offset, data))
                _trim(log.entries, maxlen, max_bytes, lambda entry: len(entry[1]))
                log.expires_at = now + ttl
            return offset, _hub.publish(channel, frame(offset, data))

    async def read_log(self, key: str, after: str, count: int) -> list[tuple[str, bytes]]:
        with _hub.lock:
            log = _hub.live_log(key, time.monotonic())
            if log is None:
                return []
            start = offset_key(after)
            later = (entry for entry in log.entries if offset_key(entry[0]) > start)
            return [entry for _, entry in zip(range(count), later, strict=False)]

    async def log_bounds(self, info_key: str, log_key: str) -> tuple[str, str]:
        now = time.monotonic()
        with _hub.lock:
            log = _hub.live_log(log_key, now)
            info = _hub.live_hash(info_key, now) or {}
            first = log.entries[0][0] if log is not None and log.entries else ""
            return first, f"{int(info.get('seq', b'0'))}-0"

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
            _hub.sweep(now)

    async def hash_get(self, key: str) -> dict[str, bytes] | None:
        with _hub.lock:
            found = _hub.live_hash(key, time.monotonic())
            return dict(found) if found is not None else None

    async def hash_delete(self, key: str, field: str) -> None:
        with _hub.lock:
            if (found := _hub.live_hash(key, time.monotonic())) is not None:
                found.pop(field, None)

    async def list_append(self, key: str, value: bytes, *, maxlen: int, max_bytes: int, ttl: float) -> None:
        now = time.monotonic()
        with _hub.lock:
            _, items = _hub.live_list(key, now) or (0.0, deque())
            items.append(value)
            _trim(items, maxlen, max_bytes, len)
            _hub.lists[key] = (now + ttl, items)
            _hub.sweep(now)

    async def list_items(self, key: str) -> list[bytes]:
        with _hub.lock:
            found = _hub.live_list(key, time.monotonic())
            return list(found[1]) if found is not None else []

    async def claim(self, key: str, value: bytes, ttl: float) -> bytes | None:
        now = time.monotonic()
        with _hub.lock:
            found = _hub.live_hash(key, now)
            if found is not None:
                return found["value"]
            _hub.hashes[key] = (now + ttl, {"value": value})
            _hub.sweep(now)
            return None

    async def store(self, key: str, value: bytes, ttl: float) -> None:
        now = time.monotonic()
        with _hub.lock:
            _hub.hashes[key] = (now + ttl, {"value": value})
            _hub.sweep(now)

    async def get(self, key: str) -> bytes | None:
        with _hub.lock:
            found = _hub.live_hash(key, time.monotonic())
            return found["value"] if found is not None else None

    async def count(self, key: str, ttl: float) -> int:
        now = time.monotonic()
        with _hub.lock:
            found = _hub.live_hash(key, now)
            value = int(found["value"]) + 1 if found is not None else 1
            expires = _hub.hashes[key][0] if found is not None else now + ttl
            _hub.hashes[key] = (expires, {"value": str(value).encode()})
            _hub.sweep(now)
            return value

    async def expire(self, keys: Iterable[str], ttl: float) -> None:
        now = time.monotonic()
        with _hub.lock:
            for key in keys:
                if (found := _hub.live_hash(key, now)) is not None:
                    _hub.hashes[key] = (now + ttl, found)
                if (log := _hub.live_log(key, now)) is not None:
                    log.expires_at = now + ttl
                if (items := _hub.live_list(key, now)) is not None:
                    _hub.lists[key] = (now + ttl, items[1])

    async def delete(self, *keys: str) -> None:
        with _hub.lock:
            for key in keys:
                _hub.hashes.pop(key, None)
                _hub.logs.pop(key, None)
                _hub.lists.pop(key, None)


async def _drain(queue: asyncio.Queue[_Message], receiver: Receiver) -> None:
    """One consumer per connection keeps deliveries in publish order, as Redis pub/sub does."""
    while True:
        channel, data = await queue.get()
        await receiver(channel, data)


def _trim(items: deque[_T], maxlen: int, max_bytes: int, size: Callable[[_T], int]) -> None:
    """Drop the oldest items beyond `maxlen` items or `max_bytes` bytes; the newest always stays."""
    total = sum(size(item) for item in items)
    while len(items) > 1 and (len(items) > maxlen or total > max_bytes):
        total -= size(items.popleft())
