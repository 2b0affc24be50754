"""`memory://`: the embedded single-process bus, shared by every event loop and thread of the process.

It keeps the Redis backend's semantics (the send script's bookkeeping, times to live) so that the
single-process default behaves like a deployment, and forgets what expired even if nobody reads it.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bus.backend import Receiver, Restored
from bus.envelope import frame, offset_key

_T = TypeVar("_T")
_Message = tuple[str, bytes]
_Subscriber = tuple[asyncio.AbstractEventLoop, "asyncio.Queue[_Message]"]
#: The identity of the in-process store: it never restarts without the process.
_SERVER = "memory"


@dataclass
class _Log:
    #: (offset number, envelope, appended at, Unix seconds)
    entries: deque[tuple[int, bytes, float]] = field(default_factory=deque)


@dataclass
class _Key:
    value: Any
    expires_at: float = math.inf


class _Hub:
    """Process-wide channels and keys; a lock makes them safe to reach from other threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.channels: dict[str, dict[int, _Subscriber]] = {}
        self.keys: dict[str, _Key] = {}
        self._swept = 0.0

    def live(self, key: str, now: float, kind: type[_T]) -> _T | None:
        """The value at `key` if it has not expired and is a `kind` (else None)."""
        entry = self.keys.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self.keys[key]
            return None
        return entry.value if isinstance(entry.value, kind) else None

    def put(self, key: str, value: Any, now: float, ttl: float | None) -> None:
        self.keys[key] = _Key(value, math.inf if ttl is None else now + ttl)
        self.sweep(now)

    def sweep(self, now: float) -> None:
        """Forget what expired (at most once a second): keys that are never read again go too."""
        if self._swept and now - self._swept < 1.0:
            return
        self._swept = now
        for key in [k for k, entry in self.keys.items() if entry.expires_at <= now]:
            del self.keys[key]

    def publish(self, channel: str, raw: bytes) -> int:
        subscribers = list(self.channels.get(channel, {}).values())
        for loop, queue in subscribers:
            loop.call_soon_threadsafe(queue.put_nowait, (channel, raw))
        return len(subscribers)


_hub = _Hub()


class MemoryBackend:
    reconnects = 0

    def __init__(self, url: str = "memory://", home_channel: str = "", **options: Any) -> None:
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
            return _hub.publish(channel, frame("", "", data))

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
        now, wall = time.monotonic(), time.time()
        with _hub.lock:
            info = _hub.live(info_key, now, dict)
            if info is None or "epoch" not in info:
                return None
            epoch = info["epoch"].decode()
            if not durable:
                return "", epoch, _hub.publish(channel, frame("", "", data))
            if info.get("last_id") == message_id.encode():  # a retry: logged already
                return f"{int(info['seq'])}-0", epoch, 0
            seq = int(info.get("seq", b"0")) + 1
            log = _hub.live(log_key, now, _Log)
            if log is None:  # a new log expires with its record
                log = _Log()
                _hub.keys[log_key] = _Key(log, _hub.keys[info_key].expires_at)
            log.entries.append((seq, data, wall))
            total = sum(len(e[1]) for e in log.entries)
            if len(log.entries) > maxlen or total > max_bytes or wall - log.entries[0][2] > max_age:
                # As the Redis script: down to 99% of the count and byte limits, all past the age.
                keep_n, keep_b = maxlen - maxlen // 100, max_bytes - max_bytes // 100
                while len(log.entries) > 1 and (
                    len(log.entries) > keep_n or total > keep_b or wall - log.entries[0][2] > max_age
                ):
                    total -= len(log.entries.popleft()[1])
            info.update(
                seq=str(seq).encode(), last_id=message_id.encode(), first=str(log.entries[0][0]).encode()
            )
            offset = f"{seq}-0"
            return offset, epoch, _hub.publish(channel, frame(offset, epoch, data))

    async def read_log(self, key: str, after: str, count: int) -> list[tuple[str, bytes]]:
        with _hub.lock:
            log = _hub.live(key, time.monotonic(), _Log)
            if log is None:
                return []
            start = offset_key(after)
            later = ((f"{n}-0", data) for n, data, _ in log.entries if (n, 0) > start)
            return [entry for _, entry in zip(range(count), later, strict=False)]

    async def log_bounds(self, info_key: str, log_key: str) -> tuple[str, str, str]:
        now = time.monotonic()
        with _hub.lock:
            log = _hub.live(log_key, now, _Log)
            info = _hub.live(info_key, now, dict) or {}
            first = f"{log.entries[0][0]}-0" if log is not None and log.entries else ""
            return first, f"{int(info.get('seq', b'0'))}-0", info.get("epoch", b"").decode()

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

    async def hash_set(self, key: str, fields: Mapping[str, bytes], ttl: float | None) -> None:
        now = time.monotonic()
        with _hub.lock:
            current = _hub.live(key, now, dict) or {}
            _hub.put(key, {**current, **fields}, now, ttl)

    async def hash_set_if(
        self, key: str, field: str, expected: bytes, fields: Mapping[str, bytes], ttl: float | None
    ) -> bool:
        now = time.monotonic()
        with _hub.lock:
            current = _hub.live(key, now, dict)
            if current is None or current.get(field) != expected:
                return False
            _hub.put(key, {**current, **fields}, now, ttl)
            return True

    async def hash_get(self, key: str, fields: list[str] | None = None) -> dict[str, bytes] | None:
        with _hub.lock:
            found = _hub.live(key, time.monotonic(), dict)
            if found is None:
                return None
            picked = dict(found) if fields is None else {f: found[f] for f in fields if f in found}
            return picked or None

    async def hash_delete(self, key: str, field: str) -> None:
        with _hub.lock:
            if (found := _hub.live(key, time.monotonic(), dict)) is not None:
                found.pop(field, None)

    async def list_append(self, key: str, value: bytes, *, maxlen: int, max_bytes: int, ttl: float) -> None:
        now = time.monotonic()
        with _hub.lock:
            items = _hub.live(key, now, deque) or deque()
            items.append(value)
            _trim(items, maxlen, max_bytes, len)
            _hub.put(key, items, now, ttl)

    async def list_items(self, key: str) -> list[bytes]:
        with _hub.lock:
            return list(_hub.live(key, time.monotonic(), deque) or ())

    async def set_add(self, key: str, member: str) -> None:
        now = time.monotonic()
        with _hub.lock:
            members = _hub.live(key, now, set)
            if members is None:
                _hub.put(key, {member}, now, None)
            else:
                members.add(member)

    async def set_remove(self, key: str, member: str) -> None:
        with _hub.lock:
            if (members := _hub.live(key, time.monotonic(), set)) is not None:
                members.discard(member)

    async def set_members(self, key: str) -> list[str]:
        with _hub.lock:
            return sorted(_hub.live(key, time.monotonic(), set) or ())

    async def claim(self, key: str, value: bytes, ttl: float) -> bytes | None:
        now = time.monotonic()
        with _hub.lock:
            found = _hub.live(key, now, bytes)
            if found is not None:
                return found
            _hub.put(key, value, now, ttl)
            return None

    async def store(self, key: str, value: bytes, ttl: float) -> None:
        with _hub.lock:
            _hub.put(key, value, time.monotonic(), ttl)

    async def get(self, key: str) -> bytes | None:
        with _hub.lock:
            return _hub.live(key, time.monotonic(), bytes)

    async def count(self, key: str, ttl: float) -> int:
        now = time.monotonic()
        with _hub.lock:
            found = _hub.live(key, now, bytes)
            if found is None:
                _hub.put(key, b"1", now, ttl)
                return 1
            value = int(found) + 1
            _hub.keys[key].value = str(value).encode()
            return value

    async def expire(self, keys: Iterable[str], ttl: float | None) -> None:
        now = time.monotonic()
        with _hub.lock:
            for key in keys:
                if (entry := _hub.keys.get(key)) is not None and entry.expires_at > now:
                    entry.expires_at = math.inf if ttl is None else now + ttl

    async def delete(self, *keys: str) -> None:
        with _hub.lock:
            for key in keys:
                _hub.keys.pop(key, None)

    async def server_id(self) -> str:
        return _SERVER


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
