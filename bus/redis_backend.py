"""`redis://`, `rediss://`, `unix://` and `redis+sentinel://`: one pub/sub connection per process, one
multiplexed connection for the delivery path (the send script, publishes, log reads: bus/multiplex.py)
and a bounded pool for the other commands. Every command answers within the configured timeout, and
every Redis error (unreachable, stalled, out of memory, read-only after a failover) is BusUnavailable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from bus.backend import Receiver, Restored
from bus.envelope import frame
from bus.errors import BusUnavailable
from bus.keys import byte_count
from bus.multiplex import Multiplexed, pack

log = logging.getLogger("switchboard.bus")

#: Every failure of Redis (RedisClusterException, e.g. a slot not covered during a cluster failover,
#: is not a RedisError).
_LOST = (RedisError, RedisClusterException, OSError, TimeoutError)
#: Commands are retried this many times (exponential backoff capped at 1 s), within the timeout.
COMMAND_RETRIES = 3
#: Errors of a server that is no primary (any more): the next connections look for the primary.
_NOT_PRIMARY = re.compile(r"\b(READONLY|NOREPLICAS|MASTERDOWN)\b")
#: The subscription pings Redis when it has been quiet this long, and counts as lost after 3x.
PING_SECONDS = 1.0

# Append to the session's log and publish in one atomic step; refuse (nil) if the session is gone.
# KEYS: registry hash, log stream (one {session_id} hash tag, so valid on Redis Cluster).
# ARGV: channel, envelope, durable ("1"/"0"), max entries, max bytes, max age ms, envelope id, now ms,
# lineage check ("1"/"0"), the publish command (PUBLISH, or SPUBLISH for a cluster's sharded channels).
# The record holds the log's bookkeeping: `epoch` (the log's name; a record without one is gone),
# `seq` (the last offset), `first` (the first offset kept), `log_bytes`, `first_ms` (when the first
# kept entry was appended), `last_id` (a retried call with the same envelope id logs nothing twice),
# `lineage` (with the lineage check: the replication id of the server that appended last).
# Offsets are `<seq>-0`, contiguous, so a trimmed range is detectable. When the log is over its count,
# bytes or age, the oldest entries go down to 99% of the count and byte limits (the newest always
# stays): one trim every 1% of the limit instead of one per send. A new log on a record that
# expires (a detached session) expires with it. `first` and `first_ms` are written only when they
# change (the first append, a trim). The frame is `offset:epoch envelope` (logged) or
# ` envelope`, as bus.envelope.frame builds it.
# The lineage check (Sentinel, Cluster): a replica promoted after a failover has a new replication id
# and may lack the last entries its old primary appended and published (replication is asynchronous;
# a forced failover leaves the old primary writing for a while). Its next offsets would repeat offsets
# a client already has, so its first append starts a new log: a new epoch (the client is told
# `log_reset`), from offset 1.
_SEND = """
if ARGV[3] ~= '1' then
  local epoch = redis.call('HGET', KEYS[1], 'epoch')
  if not epoch then return false end
  return {'', epoch, redis.call(ARGV[10], ARGV[1], ' ' .. ARGV[2])}
end
local f = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'last_id', 'log_bytes', 'first', 'first_ms', 'lineage')
local epoch = f[1]
if not epoch then return false end
if ARGV[9] == '1' then
  local here = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
  if f[7] and f[7] ~= here then
    epoch = string.sub(redis.sha1hex(epoch .. here), 1, 8)
    redis.call('DEL', KEYS[2])
    redis.call('HDEL', KEYS[1], 'last_id', 'log_bytes', 'first', 'first_ms')
    redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0, 'lineage', here)
    f = {epoch, '0', false, false, false, false, here}
  elseif not f[7] then
    redis.call('HSET', KEYS[1], 'lineage', here)
  end
end
if f[3] == ARGV[7] then return {f[2] .. '-0', epoch, 0} end
local now = tonumber(ARGV[8])
local seq = (tonumber(f[2]) or 0) + 1
local bytes = (tonumber(f[4]) or 0) + #ARGV[2]
local first = tonumber(f[5]) or seq
local first_ms = tonumber(f[6]) or now
redis.call('XADD', KEYS[2], seq .. '-0', 'e', ARGV[2], 't', ARGV[8])
local moved = first == seq or not f[5]
if first == seq then
  first_ms = now
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
if first < seq and (seq - first + 1 > tonumber(ARGV[4]) or bytes > tonumber(ARGV[5])
                   or now - first_ms > tonumber(ARGV[6])) then
  -- Over a limit: drop the oldest entries down to 99% of the count and byte limits (and all those
  -- past the age limit) in one trim, so that the next sends append without trimming.
  local max_n, max_b = tonumber(ARGV[4]), tonumber(ARGV[5])
  local keep_n, keep_b = max_n - math.floor(max_n / 100), max_b - math.floor(max_b / 100)
  local trimming = true
  while trimming do
    local batch = redis.call('XRANGE', KEYS[2], first .. '-0', '+', 'COUNT', 32)
    if #batch < 2 then break end
    for i = 1, #batch - 1 do
      local entry, after = batch[i], batch[i + 1]
      local age = now - (tonumber(entry[2][4]) or now)
      if seq - first + 1 > keep_n or bytes > keep_b or age > tonumber(ARGV[6]) then
        bytes = bytes - #entry[2][2]
        first = tonumber(string.match(after[1], '^(%d+)'))
        first_ms = tonumber(after[2][4]) or now
      else
        trimming = false
        break
      end
    end
    if #batch < 32 then trimming = false end
  end
  redis.call('XTRIM', KEYS[2], 'MINID', first .. '-0')
  moved = true
end
if moved then
  redis.call('HSET', KEYS[1], 'seq', seq, 'last_id', ARGV[7], 'log_bytes', bytes, 'first', first,
             'first_ms', first_ms)
else
  redis.call('HSET', KEYS[1], 'seq', seq, 'last_id', ARGV[7], 'log_bytes', bytes)
end
local offset = seq .. '-0'
return {offset, epoch, redis.call(ARGV[10], ARGV[1], offset .. ':' .. epoch .. ' ' .. ARGV[2])}
"""

# Append to a bounded list; KEYS: the list, its byte counter. ARGV: value, length, bytes, TTL in ms.
_APPEND = """
redis.call('RPUSH', KEYS[1], ARGV[1])
local bytes = redis.call('INCRBY', KEYS[2], #ARGV[1])
local n = redis.call('LLEN', KEYS[1])
while n > 1 and (n > tonumber(ARGV[2]) or bytes > tonumber(ARGV[3])) do
  bytes = redis.call('DECRBY', KEYS[2], #redis.call('LPOP', KEYS[1]))
  n = n - 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
"""

# Set hash fields only if one field has the expected value. KEYS: the hash. ARGV: field, expected,
# TTL in ms (0: none, the key persists), then field/value pairs.
_SET_IF = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
if ARGV[3] == '0' then redis.call('PERSIST', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""


def parse_hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """`host:port[,host:port]` (after any `user:password@`) as (host, port) pairs."""
    hosts = []
    for item in netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":")
        hosts.append((host.strip("[]") or "127.0.0.1", int(port or default_port)))
    return hosts


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], int, str, dict[str, Any]]:
    """`redis+sentinel://[user:password@]host:port[,host:port]/db/service_name` as (the Sentinels,
    the database, the service name, the primary's username and password)."""
    parts = urlsplit(url)
    path = [unquote(p) for p in parts.path.split("/") if p]
    if len(path) != 2 or not path[0].isdigit():
        raise ValueError(
            "redis+sentinel:// URLs are redis+sentinel://[user:password@]host:port[,host:port]/db/service"
        )
    auth: dict[str, Any] = {
        "username": unquote(parts.username or "") or None,
        "password": unquote(parts.password or "") or None,
    }
    return parse_hosts(parts.netloc, 26379), int(path[0]), path[1], auth


def _clients(url: str, timeout: float, max_connections: int) -> tuple[redis.Redis, redis.Redis]:
    """(commands, subscriber) for a URL; `redis+sentinel://` follows the primary Sentinel names."""
    common: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_keepalive": True}
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), COMMAND_RETRIES)
    # The subscriber connection does not reconnect by itself: _listen does, so it can count
    # reconnections and re-subscribe exactly the channels this process holds. It speaks RESP2, whose
    # pub/sub messages are plain arrays (RESP3's pushes take a slower path through redis-py).
    once = Retry(NoBackoff(), 0)
    parts = urlsplit(url)
    if parts.scheme != "redis+sentinel":
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, retry=retry, **common
        )
        subscriber = redis.Redis.from_url(url, retry=once, protocol=2, **common)
        return redis.Redis(connection_pool=pool), subscriber
    hosts, db, service, auth = parse_sentinel_url(url)
    # Typed as Any: redis-py's annotations of Sentinel differ between releases.
    sentinel: Any = cast(Any, Sentinel)(hosts, sentinel_kwargs={**common, **auth}, **common)
    commands = sentinel.master_for(service, db=db, retry=retry, max_connections=max_connections, **auth)
    return commands, sentinel.master_for(service, db=db, retry=once, protocol=2, **auth)


class RedisBackend:
    def __init__(self, url: str, home_channel: str, *, timeout: float, max_connections: int) -> None:
        self._timeout = timeout
        self._commands, self._subscriber = self._clients(url, timeout, max_connections)
        #: Whether failovers can promote a replica that missed writes (see _SEND): Sentinel, Cluster.
        self._lineage = urlsplit(url).scheme == "redis+sentinel"
        self._home = home_channel
        self._channels: set[str] = {home_channel}
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._receiver: Receiver | None = None
        self._restored: Restored | None = None
        #: Channels whose re-subscription is not confirmed yet after a reconnect.
        self._restoring: set[str] | None = None
        self._restoring_now = False
        self._send = self._commands.register_script(_SEND)
        #: The delivery path's connection (None on a cluster, whose client routes by slot).
        self._pipe = self._multiplexed()
        self._append = self._commands.register_script(_APPEND)
        self._set_if = self._commands.register_script(_SET_IF)
        self.reconnects = 0
        self._state = asyncio.Condition()

    @property
    def client(self) -> Any:
        """The redis-py client the commands go through (`Redis`, or `RedisCluster` on a cluster),
        for tools that read Redis directly (`switchboard sessions`)."""
        return self._commands

    def _available(self) -> Bounded:
        """Bound a command by the timeout; any failure of Redis is BusUnavailable."""
        return Bounded(self)

    def _clients(self, url: str, timeout: float, max_connections: int) -> tuple[Any, Any]:
        """(commands, subscriber) clients for `url`."""
        return _clients(url, timeout, max_connections)

    def _multiplexed(self) -> Multiplexed | None:
        return Multiplexed(self._commands.connection_pool, self._timeout)

    # The commands, on the multiplexed connection: raw replies (bytes, ints, lists), each retried on
    # a lost connection (with backoff, within the caller's timeout), as redis-py retries its own.

    async def _run(self, *args: Any) -> Any:
        return (await self._batch([args]))[0]

    async def _script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """A registered script by its SHA, sent in full where the server does not have it."""
        try:
            return await self._run("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._run("EVAL", script.script, len(keys), *keys, *args)

    async def _transaction(self, *commands: tuple[Any, ...]) -> list[Any]:
        """MULTI, the commands, EXEC: their replies."""
        replies = await self._batch([("MULTI",), *commands, ("EXEC",)])
        return list(replies[-1])

    async def _batch(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Commands written together, one after the other: their replies, in order."""
        assert self._pipe is not None
        backoff = 0.05
        for attempt in range(COMMAND_RETRIES + 1):
            try:
                return await self._pipe.execute_many(commands)
            except RedisConnectionError:
                if attempt == COMMAND_RETRIES:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        raise AssertionError("unreachable")

    async def _primary_moved(self) -> None:
        """The server refused a write as a replica (or a primary cut off from its replicas, after a
        failover): drop the pooled connections, so the next ones ask the Sentinels for the primary."""
        if self._pipe is not None:
            await self._pipe.close()
        with contextlib.suppress(Exception):
            await self._commands.connection_pool.disconnect()

    def _publish_command(self, channel: str) -> str:
        return "PUBLISH"

    async def _ping(self) -> None:
        await self._run("PING")

    async def connect(self, receiver: Receiver, restored: Restored) -> None:
        self._receiver, self._restored = receiver, restored
        async with self._available():
            await self._ping()
        confirmed = self._confirmation(self._home)
        self._listener = asyncio.create_task(self._listen(), name="switchboard-redis-listener")
        await self._wait(self._home, confirmed)

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._pipe is not None:
            await self._pipe.close()
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
        async with self._available():
            return int(await self._run("PUBLISH", channel, frame("", "", data)))

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
        now_ms = int(time.time() * 1000)
        flag = "1" if durable else "0"
        args: list[str | bytes | int] = [
            channel,
            data,
            flag,
            maxlen,
            max_bytes,
            int(max_age * 1000),
            message_id,
            now_ms,
            "1" if self._lineage else "0",
            self._publish_command(channel),
        ]
        async with self._available():
            result = await self._run_send([info_key, log_key], args)
        if result is None:
            return None
        offset, epoch, receivers = result
        return as_text(offset), as_text(epoch), int(receivers)

    async def _run_send(self, keys: list[str], args: list[Any]) -> Any:
        return await self._script(self._send, keys, args)

    async def read_log(self, key: str, after: str, count: int) -> list[tuple[str, bytes]]:
        async with self._available():
            entries = await self._xrange(key, f"({after}", count)
        # Entries are [id, [field, value, ...]] with the envelope under `e`.
        found = []
        for offset, fields in entries:
            values = _mapping(fields)
            if b"e" in values:
                found.append((as_text(offset), values[b"e"]))
        return found

    async def _xrange(self, key: str, start: str, count: int) -> list[Any]:
        entries: list[Any] = await self._run("XRANGE", key, start, "+", "COUNT", count)
        return entries

    async def log_bounds(self, info_key: str, log_key: str) -> tuple[str, str, str]:
        async with self._available():
            return bounds(*await self._run("HMGET", info_key, "epoch", "seq", "first"))

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        confirmed = self._confirmation(channel)  # registered first: the reply can beat the send
        if self._pubsub is not None:
            with contextlib.suppress(*_LOST):  # the listener re-subscribes after reconnecting
                async with asyncio.timeout(self._timeout):
                    await self._write(self._pubsub, "SUBSCRIBE", channel)
        await self._wait(channel, confirmed)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._pubsub is not None:
            with contextlib.suppress(*_LOST):
                async with asyncio.timeout(self._timeout):
                    await self._write(self._pubsub, "UNSUBSCRIBE", channel)

    @staticmethod
    async def _write(pubsub: PubSub, *command: str) -> None:
        """A command on the live subscription's connection, whose replies the listener reads (redis-py's
        PubSub.subscribe keeps bookkeeping and a retry wrapper this process has no use for: it
        subscribes everything again itself after a reconnect)."""
        connection: Any = pubsub.connection
        await connection.send_packed_command(pack(command), check_health=False)

    def _confirmation(self, channel: str) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, deque()).append(waiter)
        return waiter

    async def _wait(self, channel: str, waiter: asyncio.Future[None]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await waiter
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
                async with asyncio.timeout(self._timeout):
                    await pubsub.subscribe(*self._channels)
                await self._set_pubsub(pubsub)
                backoff = 0.05
                await self._receive_until_lost(pubsub)
            except _LOST as exc:
                self.reconnects += 1
                await self._set_pubsub(None)
                log.warning("bus subscription lost (%s); reconnecting in %.2fs", exc, backoff)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _receive_until_lost(self, pubsub: PubSub) -> None:
        """Dispatch what the subscription connection receives, every reply already buffered in one
        go (redis-py's parser reads it without waiting). Replies are read from the connection itself,
        with no time limit per read: PubSub.get_message would add a health check, a retry wrapper, a
        timer and a message dict per message. A watchdog pings a subscription quiet for PING_SECONDS
        and closes one that stays silent for 3x that (a stalled Redis, a black-holed network)."""
        connection: Any = pubsub.connection  # set by the first subscribe
        heard = [time.monotonic()]  # when this connection last received anything
        watchdog = asyncio.ensure_future(self._watch(pubsub, heard))
        try:
            while True:
                reply = await connection.read_response(
                    timeout=math.inf, disconnect_on_error=False, push_request=True
                )
                heard[0] = time.monotonic()
                await self._dispatch(reply)
        finally:
            watchdog.cancel()

    async def _watch(self, pubsub: PubSub, heard: list[float]) -> None:
        while True:
            await asyncio.sleep(PING_SECONDS)
            quiet = time.monotonic() - heard[0]
            if quiet > 3 * PING_SECONDS and not self._restoring_now:
                log.warning("no answer from Redis on the subscription for %.1fs: closing it", quiet)
                connection: Any = pubsub.connection
                await connection.disconnect(nowait=True)
                return
            if quiet >= PING_SECONDS:
                with contextlib.suppress(*_LOST):
                    async with asyncio.timeout(self._timeout):
                        await pubsub.ping()

    async def _dispatch(self, reply: list[Any]) -> None:
        """One pub/sub reply: [b"message", channel, data], [b"subscribe", channel, count], a pong..."""
        kind = reply[0]
        if kind == b"message":
            assert self._receiver is not None
            await self._receiver(as_text(reply[1]), reply[2])
        elif kind == b"subscribe":
            name = as_text(reply[1])
            if self._restoring is not None:
                self._restoring.discard(name)
                if not self._restoring:
                    self._restoring = None
                    assert self._restored is not None
                    # The sessions catch up before the listener reads on (the replay seam), however
                    # long that takes: the watchdog does not count it as silence.
                    self._restoring_now = True
                    try:
                        await self._restored()
                    finally:
                        self._restoring_now = False
            waiters = self._waiters.get(name)
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break

    async def hash_set(self, key: str, fields: Mapping[str, bytes], ttl: float | None) -> None:
        expiry = ("PERSIST", key) if ttl is None else ("PEXPIRE", key, millis(ttl))
        async with self._available():
            await self._transaction(("HSET", key, *_pairs(fields)), expiry)

    async def hash_set_if(
        self, key: str, field: str, expected: bytes, fields: Mapping[str, bytes], ttl: float | None
    ) -> bool:
        args = [field, expected, 0 if ttl is None else millis(ttl), *_pairs(fields)]
        async with self._available():
            return bool(await self._script(self._set_if, [key], args))

    async def hash_get(self, key: str, fields: list[str] | None = None) -> dict[str, bytes] | None:
        async with self._available():
            if fields is None:
                found = _mapping(await self._run("HGETALL", key))
            else:
                found = dict(zip(fields, await self._run("HMGET", key, *fields), strict=True))
        return {as_text(k): v for k, v in found.items() if isinstance(v, bytes)} or None

    async def hash_delete(self, key: str, field: str) -> None:
        async with self._available():
            await self._run("HDEL", key, field)

    async def list_append(self, key: str, value: bytes, *, maxlen: int, max_bytes: int, ttl: float) -> None:
        async with self._available():
            await self._script(self._append, [key, byte_count(key)], [value, maxlen, max_bytes, millis(ttl)])

    async def list_items(self, key: str) -> list[bytes]:
        async with self._available():
            items = await self._run("LRANGE", key, 0, -1)
        return [item for item in items if isinstance(item, bytes)]

    async def set_add(self, key: str, member: str) -> None:
        async with self._available():
            await self._run("SADD", key, member)

    async def set_remove(self, key: str, member: str) -> None:
        async with self._available():
            await self._run("SREM", key, member)

    async def set_members(self, key: str) -> list[str]:
        async with self._available():
            members = await self._run("SMEMBERS", key)
        return sorted(as_text(m) for m in members)

    async def claim(self, key: str, value: bytes, ttl: float) -> bytes | None:
        async with self._available():
            previous = await self._run("SET", key, value, "PX", millis(ttl), "NX", "GET")
        return previous if isinstance(previous, bytes) else None

    async def store(self, key: str, value: bytes, ttl: float) -> None:
        async with self._available():
            await self._run("SET", key, value, "PX", millis(ttl))

    async def get(self, key: str) -> bytes | None:
        async with self._available():
            value = await self._run("GET", key)
        return value if isinstance(value, bytes) else None

    async def count(self, key: str, ttl: float) -> int:
        async with self._available():
            value, _ = await self._transaction(("INCR", key), ("PEXPIRE", key, millis(ttl), "NX"))
        return int(value)

    async def expire(self, keys: Iterable[str], ttl: float | None) -> None:
        commands = [("PERSIST", key) if ttl is None else ("PEXPIRE", key, millis(ttl)) for key in keys]
        if commands:
            async with self._available():
                await self._batch(commands)

    async def delete(self, *keys: str) -> None:
        async with self._available():
            await self._run("DEL", *keys)

    async def server_id(self) -> str:
        async with self._available():
            info = as_text(await self._run("INFO", "server"))
        found = re.search(r"^run_id:(\w+)", info, re.MULTILINE)
        return found[1] if found else ""


class Bounded:
    """`async with backend._available():` a command bounded by the timeout, any failure of Redis
    BusUnavailable (a class, not a generator: it wraps every command)."""

    __slots__ = ("_backend", "_slots", "_timeout")

    def __init__(self, backend: RedisBackend, slots: asyncio.Semaphore | None = None) -> None:
        self._backend = backend
        #: At most this many commands at a time (the others wait, within the timeout).
        self._slots = slots
        self._timeout = asyncio.timeout(backend._timeout)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()
        if self._slots is not None:
            await self._slots.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._slots is not None:
            self._slots.release()
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            raise BusUnavailable(f"Redis did not answer within {self._backend._timeout:g}s") from None
        if exc is None or not isinstance(exc, _LOST):
            return
        if isinstance(exc, ResponseError) and _NOT_PRIMARY.search(str(exc)):
            await self._backend._primary_moved()
        raise BusUnavailable(f"Redis is unavailable: {exc.__class__.__name__}: {exc}") from exc


def bounds(epoch: bytes | None, seq: bytes | None, first: bytes | None) -> tuple[str, str, str]:
    """Transport.log_bounds from the record's `epoch`, `seq` and `first` fields."""
    last = int(seq or 0)
    kept = first is not None and int(first) <= last
    return (f"{int(first or 0)}-0" if kept else ""), f"{last}-0", as_text(epoch or b"")


def _mapping(reply: Any) -> dict[Any, Any]:
    """A map reply: a dict (RESP3) or a flat list of keys and values (RESP2)."""
    return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))


def _pairs(fields: Mapping[str, bytes]) -> list[str | bytes]:
    return [item for pair in fields.items() for item in pair]


def millis(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
