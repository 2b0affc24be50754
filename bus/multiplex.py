"""One Redis connection shared by all concurrent commands of a process, as Node's Redis clients do.

Commands are written as they come, everything one event-loop turn produced in one write, and the
replies are read back in order by one reader task, so a send costs no connection checkout and many
sends cost one round trip. A reply that is a Redis error fails only its own command. When the
connection breaks, every command waiting on it fails with ConnectionError and the next command opens a
new one (from the same redis-py pool: its URL, credentials, TLS and Sentinel lookup). A caller that
gives up while the oldest written command has waited `timeout` seconds closes the connection: the
server is stalled or the path dead, and the next command should not queue behind it. The commands
written on a stalled connection fail with Unanswered, not ConnectionError: a stalled server may still
run them when it wakes, so they are not retried (a publish could arrive twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from typing import Any, cast

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError, RedisError, ResponseError


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP (the bus sends str, bytes, int and float arguments): redis-py's
    pack_command does more, per argument, than this path can afford."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        elif isinstance(arg, float):
            arg = repr(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


class Unanswered(RedisError):
    """A command written to a server that stopped answering: it may still run (never retried)."""


def _forget(future: asyncio.Future[Any]) -> None:
    """Retrieve a future's exception nobody will read (no 'exception was never retrieved')."""
    if not future.cancelled():
        future.exception()


class Multiplexed:
    def __init__(self, pool: ConnectionPool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._connection: AbstractConnection | None = None
        self._connecting: asyncio.Task[AbstractConnection] | None = None
        self._reader: asyncio.Task[None] | None = None
        #: Written commands' futures and when they were written, in the order their replies will come.
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        #: Commands of this loop turn, not written yet.
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._writing = False
        self._closing: set[asyncio.Future[None]] = set()

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The raw replies (bytes, ints, lists) of commands written one after the other, nothing
        between them (a MULTI ... EXEC stays whole); the first error reply is raised."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self._queued.extend(zip(commands, futures, strict=True))
        if not self._writing:
            self._writing = True
            loop.call_soon(self._write_soon)
        try:
            # The replies come in order: awaiting each in turn is a gather without its tasks.
            return [await future for future in futures]
        except BaseException as exc:
            # The others' outcomes are not wanted any more; those not written yet are never written
            # (half a MULTI ... EXEC must not run after its caller gave up).
            for future in futures:
                if not future.cancel():
                    _forget(future)
            # The oldest written command unanswered for half the timeout: a stall, not a slow reply.
            stalled = self._waiting and loop.time() - self._waiting[0][1] >= self._timeout / 2
            if isinstance(exc, asyncio.CancelledError) and stalled:
                self._broken(Unanswered(f"Redis did not answer within {self._timeout:g}s"))
            raise

    def _write_soon(self) -> None:
        connection = self._connection
        if connection is None or not connection.is_connected:
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
                self._connecting.add_done_callback(self._connected)
            return
        self._writing = False
        batch = [(args, future) for args, future in self._queued if not future.done()]
        self._queued.clear()
        if not batch:
            return
        now = asyncio.get_running_loop().time()
        self._waiting.extend((future, now) for _, future in batch)
        packed = [pack(args) for args, _ in batch]
        # One write for the batch; without a socket timeout redis-py's writer buffers and drains.
        task = asyncio.ensure_future(connection.send_packed_command(packed, check_health=False))
        task.add_done_callback(lambda written: self._written(written, connection))

    def _written(self, task: asyncio.Future[None], connection: AbstractConnection) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._broken(exc, connection)

    async def _connect(self) -> AbstractConnection:
        # Any: redis-py annotates get_connection in some releases only.
        connection: AbstractConnection = await cast(Any, self._pool).get_connection()
        self._reader = asyncio.create_task(self._read(connection), name="switchboard-redis-reader")
        return connection

    def _connected(self, task: asyncio.Task[AbstractConnection]) -> None:
        self._connecting = None
        if task.cancelled() or (exc := task.exception()) is not None:
            error = ConnectionError("cannot connect to Redis") if task.cancelled() else exc
            queued, self._queued, self._writing = self._queued, [], False
            for _, future in queued:
                if not future.done():
                    future.set_exception(error)  # type: ignore[arg-type]
            return
        self._connection = task.result()
        self._write_soon()

    async def _read(self, connection: AbstractConnection) -> None:
        while True:
            try:
                reply = await connection.read_response(timeout=math.inf, disconnect_on_error=False)
            except ResponseError as exc:
                reply = exc
            except BaseException as exc:
                self._broken(exc, connection)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            if not self._waiting:
                continue  # a reply after the futures were failed: the connection is going away
            future, _ = self._waiting.popleft()
            if not future.done():
                if isinstance(reply, ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def _broken(self, exc: BaseException, connection: AbstractConnection | None = None) -> None:
        """Fail every written command and drop the connection; the next command connects again."""
        connection = connection or self._connection
        if connection is None or connection is not self._connection:
            return
        self._connection = None
        lost = isinstance(exc, ConnectionError | Unanswered)
        error = exc if lost else ConnectionError(f"connection lost: {exc!r}")
        waiting, self._waiting = self._waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        closing = asyncio.ensure_future(self._close(connection))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        if self._queued and not self._writing:
            self._writing = True
            asyncio.get_running_loop().call_soon(self._write_soon)

    async def _close(self, connection: AbstractConnection) -> None:
        with contextlib.suppress(Exception):
            await connection.disconnect(nowait=True)
        with contextlib.suppress(Exception):
            await self._pool.release(connection)

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is not None:
            self._broken(ConnectionError("closed"))
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await asyncio.gather(*self._closing, return_exceptions=True)
