"""`redis+cluster://host:port[,host:port]`: Redis Cluster through redis-py's asyncio `RedisCluster`.

Commands and the send script go to the primary of each key's slot (every session's keys share its
`{session_id}` hash tag, so the script's keys and channel are in one slot). Session, user and reply
channels are shard channels (`SPUBLISH`, in the send script too; `SSUBSCRIBE` on the primary that owns
the channel's slot): a message travels only within its shard. The broadcast and replica channels stay
classic (`PUBLISH` reaches every node); they too are published and subscribed on the primary that owns
their name's slot, so the count of receivers `PUBLISH` returns includes every subscriber.

The subscription is one connection per primary holding a subscribed channel. Any of them lost (a
node down, a failover), or a shard channel unsubscribed by the server (its slot moved to another
node), counts as the subscription lost: the cluster's map is read again, every channel is subscribed
again on its current owner, and the sessions catch up from their logs, as after any reconnection
(`Transport.connect`'s `restored`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from bus.errors import BusUnavailable
from bus.keys import byte_count, sharded
from bus.redis_backend import (
    _LOST,
    COMMAND_RETRIES,
    Bounded,
    RedisBackend,
    as_text,
    bounds,
    millis,
    parse_hosts,
)

log = logging.getLogger("switchboard.bus")


class ClusterBackend(RedisBackend):
    def _clients(self, url: str, timeout: float, max_connections: int) -> tuple[Any, Any]:
        parts = urlsplit(url)
        self._auth: dict[str, Any] = {
            "username": unquote(parts.username or "") or None,
            "password": unquote(parts.password or "") or None,
        }
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError("redis+cluster:// URLs name no database: Redis Cluster has only database 0")
        self._connect_timeout = timeout
        nodes = [ClusterNode(host, port) for host, port in parse_hosts(parts.netloc, 6379)]
        commands = RedisCluster(
            startup_nodes=nodes,
            max_connections=max_connections,
            socket_connect_timeout=timeout,
            socket_keepalive=True,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), COMMAND_RETRIES),
            **self._auth,
        )
        return commands, None

    def __init__(self, url: str, home_channel: str, *, timeout: float, max_connections: int) -> None:
        #: A plain client per node (by name), for the subscription connections.
        self._node_clients: dict[str, redis.Redis] = {}
        #: The live subscription connections, by node name.
        self._subs: dict[str, PubSub] = {}
        self._readers: set[asyncio.Task[None]] = set()
        #: Set (with the reason) when any subscription connection is lost.
        self._lost: asyncio.Future[None] | None = None
        self._subs_lock = asyncio.Lock()
        #: redis-py's cluster pools refuse a command past max_connections at once: wait instead.
        self._slots = asyncio.Semaphore(max_connections)
        super().__init__(url, home_channel, timeout=timeout, max_connections=max_connections)
        self._lineage = True

    def _multiplexed(self) -> None:
        """The cluster client routes each command to its slot's primary itself."""

    def _available(self) -> Bounded:
        """As on one node, and at most max_connections commands at a time (the others wait, within
        the timeout), so no node's pool runs out."""
        return Bounded(self, self._slots)

    async def _run_send(self, keys: list[str], args: list[Any]) -> Any:
        return await self._send(keys=keys, args=args)

    async def _xrange(self, key: str, start: str, count: int) -> list[Any]:
        entries = await self._commands.xrange(key, start, "+", count=count)
        return [[offset, [item for pair in fields.items() for item in pair]] for offset, fields in entries]

    async def _ping(self) -> None:
        await self._commands.ping()

    async def log_bounds(self, info_key: str, log_key: str) -> tuple[str, str, str]:
        async with self._available():
            found: list[Any] = await self._commands.hmget(info_key, ["epoch", "seq", "first"])
        return bounds(*found)

    # -- the store, through redis-py's cluster client (each command to its key's slot) -------------

    async def hash_set(self, key: str, fields: Mapping[str, bytes], ttl: float | None) -> None:
        async with self._available(), self._commands.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=dict(fields))
            if ttl is None:
                pipe.persist(key)
            else:
                pipe.pexpire(key, millis(ttl))
            await pipe.execute()

    async def hash_set_if(
        self, key: str, field: str, expected: bytes, fields: Mapping[str, bytes], ttl: float | None
    ) -> bool:
        pairs = [item for pair in fields.items() for item in pair]
        async with self._available():
            done = await self._set_if(
                keys=[key], args=[field, expected, 0 if ttl is None else millis(ttl), *pairs]
            )
        return bool(done)

    async def hash_get(self, key: str, fields: list[str] | None = None) -> dict[str, bytes] | None:
        async with self._available():
            if fields is None:
                found = await self._commands.hgetall(key)
            else:
                values: list[Any] = await self._commands.hmget(key, fields)
                found = dict(zip(fields, values, strict=True))
        return {as_text(k): v for k, v in found.items() if isinstance(v, bytes)} or None

    async def hash_delete(self, key: str, field: str) -> None:
        async with self._available():
            await self._commands.hdel(key, field)

    async def list_append(self, key: str, value: bytes, *, maxlen: int, max_bytes: int, ttl: float) -> None:
        async with self._available():
            await self._append(keys=[key, byte_count(key)], args=[value, maxlen, max_bytes, millis(ttl)])

    async def list_items(self, key: str) -> list[bytes]:
        async with self._available():
            items = await self._commands.lrange(key, 0, -1)
        return [item for item in items if isinstance(item, bytes)]

    async def set_add(self, key: str, member: str) -> None:
        async with self._available():
            await self._commands.sadd(key, member)

    async def set_remove(self, key: str, member: str) -> None:
        async with self._available():
            await self._commands.srem(key, member)

    async def set_members(self, key: str) -> list[str]:
        async with self._available():
            members = await self._commands.smembers(key)
        return sorted(as_text(m) for m in members)

    async def claim(self, key: str, value: bytes, ttl: float) -> bytes | None:
        async with self._available():
            previous = await self._commands.set(key, value, px=millis(ttl), nx=True, get=True)
        return previous if isinstance(previous, bytes) else None

    async def store(self, key: str, value: bytes, ttl: float) -> None:
        async with self._available():
            await self._commands.set(key, value, px=millis(ttl))

    async def get(self, key: str) -> bytes | None:
        async with self._available():
            value = await self._commands.get(key)
        return value if isinstance(value, bytes) else None

    async def count(self, key: str, ttl: float) -> int:
        async with self._available(), self._commands.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, millis(ttl), nx=True)
            value, _ = await pipe.execute()
        return int(value)

    async def expire(self, keys: Iterable[str], ttl: float | None) -> None:
        async with self._available(), self._commands.pipeline(transaction=False) as pipe:
            for key in keys:
                if ttl is None:
                    pipe.persist(key)
                else:
                    pipe.pexpire(key, millis(ttl))
            await pipe.execute()

    async def delete(self, *keys: str) -> None:
        async with self._available():
            await self._commands.delete(*keys)

    def _publish_command(self, channel: str) -> str:
        return "SPUBLISH" if sharded(channel) else "PUBLISH"

    async def _primary_moved(self) -> None:
        """RedisCluster follows MOVED redirections and refreshes its map itself."""

    async def publish(self, channel: str, data: bytes) -> int:
        from bus.envelope import frame

        async with self._available():
            if sharded(channel):
                return int(await self._commands.spublish(channel, frame("", "", data)))
            node = self._commands.get_node_from_key(channel)
            return int(await self._commands.publish(channel, frame("", "", data), target_nodes=node))

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self._close_subs()
        for client in self._node_clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        await self._commands.aclose()

    async def server_id(self) -> str:
        """A hash of the primaries' run ids: changes when any of them restarts or fails over."""
        async with self._available():
            found = await self._commands.info("server", target_nodes=RedisCluster.PRIMARIES)
        run_ids = sorted(str(info.get("run_id", "")) for info in found.values() if isinstance(info, dict))
        return hashlib.sha1(",".join(run_ids).encode(), usedforsecurity=False).hexdigest()

    # -- the subscription ------------------------------------------------------------------------

    def _node_client(self, node: ClusterNode) -> redis.Redis:
        client = self._node_clients.get(node.name)
        if client is None:
            client = redis.Redis(
                host=node.host,
                port=int(node.port),
                socket_connect_timeout=self._connect_timeout,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0),
                protocol=2,
                **self._auth,
            )
            self._node_clients[node.name] = client
        return client

    async def _sub_for(self, channel: str) -> PubSub:
        """The connection for `channel`: on the primary owning its slot (created on first use; its
        reader starts with its first subscription)."""
        node = self._commands.get_node_from_key(channel)
        pubsub = self._subs.get(node.name)
        if pubsub is None:
            pubsub = self._node_client(node).pubsub()
            self._subs[node.name] = pubsub
        return pubsub

    async def _subscribe_on_live(self, channel: str) -> None:
        async with self._subs_lock:
            pubsub = await self._sub_for(channel)
            fresh = pubsub.connection is None
            if sharded(channel):
                await pubsub.ssubscribe(channel)
            else:
                await pubsub.subscribe(channel)
            if fresh:
                self._start_reader(pubsub)

    def _start_reader(self, pubsub: PubSub) -> None:
        task = asyncio.create_task(self._read(pubsub), name="switchboard-cluster-reader")
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _read(self, pubsub: PubSub) -> None:
        try:
            await self._receive_until_lost(pubsub)
        except _LOST as exc:
            if self._lost is not None and not self._lost.done():
                self._lost.set_exception(exc)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        confirmed = self._confirmation(channel)
        if self._pubsub is not None:
            with contextlib.suppress(*_LOST):  # the listener subscribes again after reconnecting
                async with asyncio.timeout(self._timeout):
                    await self._subscribe_on_live(channel)
        await self._wait(channel, confirmed)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._pubsub is None:
            return
        with contextlib.suppress(*_LOST):
            async with asyncio.timeout(self._timeout), self._subs_lock:
                pubsub = self._subs.get(self._commands.get_node_from_key(channel).name)
                if pubsub is None:
                    return  # nothing subscribed there: the slot moved, and the listener reconnects
                if sharded(channel):
                    await pubsub.sunsubscribe(channel)
                else:
                    await pubsub.unsubscribe(channel)

    async def _close_subs(self) -> None:
        readers = list(self._readers)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for pubsub in self._subs.values():
            with contextlib.suppress(Exception):
                await cast(Any, pubsub).aclose()  # annotated in some redis-py releases only
        self._subs.clear()

    async def _listen(self) -> None:
        backoff = 0.05
        while True:
            self._lost = asyncio.get_running_loop().create_future()
            try:
                if self.reconnects:
                    self._restoring = set(self._channels)
                    await self._commands.nodes_manager.initialize()  # where every slot is now
                async with asyncio.timeout(self._timeout):
                    for channel in sorted(self._channels):
                        await self._subscribe_on_live(channel)
                await self._set_pubsub(await self._sub_for(self._home))
                backoff = 0.05
                await self._lost
            except (*_LOST, BusUnavailable) as exc:
                if self._lost.done() and not self._lost.cancelled():
                    self._lost.exception()  # retrieved: the reason is `exc` or came with it
                self.reconnects += 1
                await self._set_pubsub(None)
                log.warning("bus subscription lost (%s); reconnecting in %.2fs", exc, backoff)
                await self._close_subs()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _dispatch(self, reply: list[Any]) -> None:
        kind = reply[0]
        if kind == b"smessage" or kind == b"ssubscribe":
            reply = [kind[1:], *reply[1:]]
        elif kind == b"sunsubscribe":
            name = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
            if name in self._channels:  # not ours to drop: the server did, as the slot moved
                raise ConnectionError(f"the slot of {name} moved to another node")
            return
        await super()._dispatch(reply)
