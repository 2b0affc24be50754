"""`redis://` and `rediss://`: one pub/sub connection per process plus a pooled client for commands."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bus.backend import Receiver, Restored
from bus.envelope import frame
from bus.errors import BusUnavailable

log = logging.getLogger("switchboard.bus")

_LOST = (RedisConnectionError, RedisTimeoutError, OSError)
#: How long subscribe() waits for Redis to confirm before giving up.
SUBSCRIBE_TIMEOUT = 5.0
#: Pooled command connections per process, and how long a command waits for one when all are busy.
POOL_SIZE = 100
POOL_TIMEOUT = 10.0
#: Commands are retried this many times (exponential backoff capped at 1 s) before BusUnavailable.
COMMAND_RETRIES = 3

# Append to the session's log and publish in one atomic step; refuse (nil) if the session is gone.
# KEYS: registry hash, log stream (one {session_id} hash tag, so valid on Redis Cluster).
# ARGV: channel, envelope, durable ("1"/"0"), log length, TTL in ms, envelope id.
# Offsets are `<n>-0` with n counted per session in the registry hash, so they are contiguous and
# a trimmed range is detectable. A retried call (same envelope id as the last one) logs nothing
# twice. The published frame is `offset .. " " .. envelope`, as bus.envelope.frame builds it.
_SEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local offset = ''
if ARGV[3] == '1' then
  if redis.call('HGET', KEYS[1], 'last_id') == ARGV[6] then
    return {redis.call('HGET', KEYS[1], 'last_offset'), 0}
  end
  offset = redis.call('HINCRBY', KEYS[1], 'seq', 1) .. '-0'
  redis.call('HSET', KEYS[1], 'last_id', ARGV[6], 'last_offset', offset)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], offset, 'e', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return {offset, redis.call('PUBLISH', ARGV[1], offset .. ' ' .. ARGV[2])}
"""


@contextlib.asynccontextmanager
async def _available() -> AsyncIterator[None]:
    try:
        yield
    except _LOST as exc:
        raise BusUnavailable(f"Redis is unreachable: {exc}") from exc


class RedisBackend:
    def __init__(self, url: str, home_channel: str) -> None:
        retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), COMMAND_RETRIES)
        # A burst (every client of a drained replica resuming here) waits for a pooled connection
        # instead of failing with "Too many connections" once the pool's limit is reached.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=POOL_TIMEOUT,
            retry=retry,
            socket_connect_timeout=5.0,
            socket_keepalive=True,
        )
        self._commands = redis.Redis.from_pool(pool)
        # The subscriber connection does not reconnect by itself: _listen does, so it can count
        # reconnections and re-subscribe exactly the channels this process holds.
        self._subscriber = redis.Redis.from_url(
            url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=5.0, socket_keepalive=True
        )
        self._home = home_channel
        self._channels: set[str] = {home_channel}
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._receiver: Receiver | None = None
        self._restored: Restored | None = None
        #: Channels whose re-subscription is not confirmed yet after a reconnect.
        self._restoring: set[str] | None = None
        self._send = self._commands.register_script(_SEND)
        self.reconnects = 0
        self._state = asyncio.Condition()

    async def connect(self, receiver: Receiver, restored: Restored) -> None:
        self._receiver, self._restored = receiver, restored
        async with _available():
            await self._commands.ping()
        confirmed = self._confirmation(self._home)
        self._listener = asyncio.create_task(self._listen(), name="switchboard-redis-listener")
        await self._wait(self._home, confirmed)

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self._commands.aclose()
        await self._subscriber.aclose()

    async def wait_ready(self, reconnects: int = 0) -> None:
        """Wait until the subscription is live and has been re-established at least `reconnects` times."""
        async with self._state:
            await self._state.wait_for(lambda: self._pubsub is not None and self.reconnects >= reconnects)

    async def _set_pubsub(self, pubsub: PubSub | None) -> None:
        async with self._state:
            self._pubsub = pubsub
            self._state.notify_all()

    async def publish(self, channel: str, data: bytes) -> int:
        async with _available():
            return int(await self._commands.publish(channel, frame("", data)))

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
        flag = "1" if durable else "0"
        args: list[str | bytes | int] = [channel, data, flag, maxlen, int(ttl * 1000), message_id]
        async with _available():
            result = await self._send(keys=[info_key, log_key], args=args)
        if result is None:
            return None
        offset, receivers = result
        return _text(offset), int(receivers)

    async def read_log(self, key: str, after: str, count: int) -> list[tuple[str, bytes]]:
        async with _available():
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await self._commands.xrange(
                key, f"({after}", "+", count=count
            )  # type: ignore[assignment]
        return [(offset.decode(), fields[b"e"]) for offset, fields in entries if b"e" in fields]

    async def log_bounds(self, info_key: str, log_key: str) -> tuple[str, str]:
        async with _available(), self._commands.pipeline(transaction=True) as pipe:
            pipe.xrange(log_key, "-", "+", count=1)
            pipe.hget(info_key, "seq")
            first, seq = await pipe.execute()
        return (_text(first[0][0]) if first else ""), f"{int(seq or 0)}-0"

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        confirmed = self._confirmation(channel)  # registered first: the reply can beat the send
        if self._pubsub is not None:
            with contextlib.suppress(*_LOST):  # the listener re-subscribes after reconnecting
                await self._pubsub.subscribe(channel)
        await self._wait(channel, confirmed)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._pubsub is not None:
            with contextlib.suppress(*_LOST):
                await self._pubsub.unsubscribe(channel)

    def _confirmation(self, channel: str) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, deque()).append(waiter)
        return waiter

    async def _wait(self, channel: str, waiter: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(waiter, SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            raise BusUnavailable(f"Redis did not confirm the subscription to {channel}") from None
        finally:
            waiters = self._waiters.get(channel)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
                if not waiters:
                    del self._waiters[channel]

    async def _listen(self) -> None:
        backoff = 0.05
        while True:
            pubsub = self._subscriber.pubsub()
            try:
                if self.reconnects:
                    self._restoring = set(self._channels)
                await pubsub.subscribe(*self._channels)
                await self._set_pubsub(pubsub)
                backoff = 0.05
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        await self._dispatch(message)
            except _LOST as exc:
                self.reconnects += 1
                await self._set_pubsub(None)
                log.warning("bus subscription lost (%s); reconnecting in %.2fs", exc, backoff)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _dispatch(self, message: dict[str, object]) -> None:
        channel = message["channel"]
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        if message["type"] == "message":
            assert self._receiver is not None
            data = message["data"]
            await self._receiver(name, data if isinstance(data, bytes) else str(data).encode())
        elif message["type"] == "subscribe":
            if self._restoring is not None:
                self._restoring.discard(name)
                if not self._restoring:
                    self._restoring = None
                    assert self._restored is not None
                    await self._restored()
            waiters = self._waiters.get(name)
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break

    async def hash_set(self, key: str, fields: Mapping[str, bytes], ttl: float) -> None:
        async with _available(), self._commands.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=dict(fields))  # type: ignore[arg-type]  # Mapping is invariant in its key
            pipe.pexpire(key, int(ttl * 1000))
            await pipe.execute()

    async def hash_get(self, key: str) -> dict[str, bytes] | None:
        async with _available():
            found = await self._commands.hgetall(key)
        return {_text(k): v for k, v in found.items() if isinstance(v, bytes)} or None

    async def hash_delete(self, key: str, field: str) -> None:
        async with _available():
            await self._commands.hdel(key, field)

    async def list_append(self, key: str, value: bytes, maxlen: int) -> None:
        async with _available(), self._commands.pipeline(transaction=True) as pipe:
            pipe.rpush(key, value)
            pipe.ltrim(key, -maxlen, -1)
            await pipe.execute()

    async def list_items(self, key: str) -> list[bytes]:
        async with _available():
            items = await self._commands.lrange(key, 0, -1)
        return [item for item in items if isinstance(item, bytes)]

    async def claim(self, key: str, value: bytes, ttl: float) -> bytes | None:
        async with _available():
            previous = await self._commands.set(key, value, px=int(ttl * 1000), nx=True, get=True)
        return previous if isinstance(previous, bytes) else None

    async def store(self, key: str, value: bytes, ttl: float) -> None:
        async with _available():
            await self._commands.set(key, value, px=int(ttl * 1000))

    async def get(self, key: str) -> bytes | None:
        async with _available():
            value = await self._commands.get(key)
        return value if isinstance(value, bytes) else None

    async def count(self, key: str, ttl: float) -> int:
        async with _available(), self._commands.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, int(ttl * 1000), nx=True)
            value, _ = await pipe.execute()
        return int(value)

    async def expire(self, keys: Iterable[str], ttl: float) -> None:
        async with _available(), self._commands.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.pexpire(key, int(ttl * 1000))
            await pipe.execute()

    async def delete(self, *keys: str) -> None:
        async with _available():
            await self._commands.delete(*keys)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
