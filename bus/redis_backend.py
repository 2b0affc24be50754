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

from bus.backend import BusUnavailable, Receiver

log = logging.getLogger("switchboard.bus")

_LOST = (RedisConnectionError, RedisTimeoutError, OSError)
#: How long subscribe() waits for Redis to confirm before giving up.
SUBSCRIBE_TIMEOUT = 5.0
#: Commands are retried this many times (exponential backoff capped at 1 s) before BusUnavailable.
COMMAND_RETRIES = 3


@contextlib.asynccontextmanager
async def _available() -> AsyncIterator[None]:
    try:
        yield
    except _LOST as exc:
        raise BusUnavailable(f"Redis is unreachable: {exc}") from exc


class RedisBackend:
    def __init__(self, url: str, home_channel: str) -> None:
        retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), COMMAND_RETRIES)
        self._commands = redis.Redis.from_url(
            url, retry=retry, socket_connect_timeout=5.0, socket_keepalive=True
        )
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
        self.reconnects = 0
        self._state = asyncio.Condition()

    async def connect(self, receiver: Receiver) -> None:
        self._receiver = receiver
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
            return int(await self._commands.publish(channel, data))

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

    async def expire(self, keys: Iterable[str], ttl: float) -> None:
        async with _available(), self._commands.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.pexpire(key, int(ttl * 1000))
            await pipe.execute()

    async def delete(self, key: str) -> None:
        async with _available():
            await self._commands.delete(key)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
