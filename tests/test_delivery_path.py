"""The delivery path under pressure: one multiplexed Redis connection per process, and a socket whose
client stopped reading, closed and caught up from its log when it returns."""

import asyncio
import json
import secrets
import socket
import types
from collections.abc import Callable
from typing import Any, cast

import pytest
import redis.asyncio as redis
import websockets
from redis.asyncio import ConnectionPool

from bus import Bus, Envelope, Settings, Target, offset_key
from bus.multiplex import Multiplexed
from tests.harness import ChatClient, Replica
from web.sio import SocketManager
from workers import Client


async def test_concurrent_sends_share_one_connection_and_keep_contiguous_offsets(
    redis_url: str, prefix: str
) -> None:
    admin = redis.Redis.from_url(redis_url)
    async with Bus(Settings(redis_url=redis_url, key_prefix=prefix, replica_id="mux")) as bus:
        session_id = secrets.token_urlsafe(18)
        await bus.registry.create(session_id, user=None, thread_id=None, resume_token="t")
        names = {c["id"] for c in await admin.client_list()}
        receipts = await asyncio.gather(
            *(
                bus.send(Envelope(Target.session(session_id), "new_message", {"n": i}, "mux"))
                for i in range(1000)
            )
        )
        offsets = sorted(offset_key(r.offset)[0] for r in receipts)
        assert offsets == list(range(1, 1001))
        # The 1,000 concurrent sends opened no connection besides the bus's command connection
        # and its subscription, both there before them.
        assert {c["id"] for c in await admin.client_list()} <= names
        assert await bus.store.hash_get(bus.keys.session(session_id), ["seq"]) == {"seq": b"1000"}
    await admin.aclose()


async def stuck_socket(replica: Replica) -> tuple[websockets.ClientConnection, dict[str, str]]:
    """A Socket.IO client, by hand over a raw websocket, that reads its `session` event and then
    nothing more: the open socket, never read again, and that event's payload."""
    url = f"ws://127.0.0.1:{replica.port}{replica.socketio_path}/?EIO=4&transport=websocket"
    # A small fixed receive buffer (no autotuning): the server's side fills after a few MiB.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect(("127.0.0.1", replica.port))
    ws = await websockets.connect(url, sock=sock, max_size=None)
    assert (await ws.recv()).startswith("0")  # Engine.IO open
    await ws.send("40")  # Socket.IO connect to "/"
    while True:
        frame = await ws.recv()
        if isinstance(frame, str) and frame.startswith('42["session"'):
            return ws, json.loads(frame[2:])[1]


async def test_a_socket_that_stops_reading_is_closed_and_catches_up_from_its_log(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    env = {
        "SWITCHBOARD_MAX_QUEUED_EVENTS": "50",
        "SWITCHBOARD_SESSION_LOG_LENGTH": "10000",
        "SWITCHBOARD_SESSION_LOG_BYTES": str(256 * 1024 * 1024),
    }
    a = replicas(env=env)
    ws, session = await stuck_socket(a)
    n = 2000  # 16 MiB: more than the socket buffers on the way hold
    # The sender trims the log by its own settings: the worker has the replica's.
    async with Client(Settings.from_env({**replica_env, **env})) as worker:
        # Random text: websocket compression would shrink a repeated one to nothing.
        receipts = [
            await worker.send_to_session(session["sessionId"], f"{i} {secrets.token_urlsafe(6144)}")
            for i in range(n)
        ]
    assert all(r.status in ("delivered", "queued") for r in receipts)
    await asyncio.to_thread(a.process.wait_for_line, "events queued: disconnecting it")
    await asyncio.to_thread(a.process.wait_for_line, f"session {session['sessionId']} detached")
    assert (await a.aget("/stats")).json()["refused"]["slow_consumer"] == 1
    # Reading again, the client finds its websocket closed after what was already on its way (the
    # socket buffers), not the whole queue and then silence until a missed ping, 45 s later.
    frames = 0
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(30):
            while True:
                await ws.recv()
                frames += 1
    assert frames < n - 50, frames
    # The client comes back (it had read nothing after `session`): everything, once, in order.
    back = await clients().connect(
        a, {"sessionId": session["sessionId"], "resumeToken": session["resumeToken"], "lastOffset": "0-0"}
    )
    await back.next("new_message", lambda m: m["output"].startswith(f"{n - 1} "), timeout=60)
    assert [int(o.split()[0]) for o in back.outputs()] == list(range(n))
    await ws.close()


async def test_commands_whose_caller_gave_up_before_they_were_written_never_run(
    redis_url: str, prefix: str
) -> None:
    """Cancelling a batch cancels all of it: the tail of a MULTI ... EXEC written after its caller
    timed out would run outside any transaction."""

    class SlowToConnect:  # a connection that takes a while to open (a slow TLS handshake, say)
        def __init__(self, pool: ConnectionPool) -> None:
            self.pool = pool
            self.opened = asyncio.Event()

        async def get_connection(self) -> Any:
            await asyncio.sleep(0.5)
            connection = await self.pool.get_connection()
            self.opened.set()
            return connection

        async def release(self, connection: Any) -> None:
            await self.pool.release(connection)

    admin = redis.Redis.from_url(redis_url)
    pool = SlowToConnect(ConnectionPool.from_url(redis_url))
    pipe = Multiplexed(cast(ConnectionPool, pool), 5.0)
    a, b = f"{prefix}:a", f"{prefix}:b"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await pipe.execute_many([("MULTI",), ("SET", a, "1"), ("SET", b, "1"), ("EXEC",)])
    await pool.opened.wait()
    assert await pipe.execute_many([("PING",)]) == [b"PONG"]  # written after whatever was left
    assert await admin.exists(a, b) == 0
    await pipe.close()
    await pool.pool.disconnect()
    await admin.aclose()


async def test_a_socket_that_leaves_while_its_queue_is_written_is_no_slow_consumer() -> None:
    """Its writer stopped with packets left: the queue never drains, and the socket is closed."""
    given_up: list[str] = []
    manager = SocketManager(10, given_up.append)
    stuck = types.SimpleNamespace(queue=asyncio.Queue(), closed=False)
    stuck.queue.put_nowait("a packet its writer will never send")
    manager.server = types.SimpleNamespace(eio=types.SimpleNamespace(sockets={"eio-1": stuck}))
    manager.eio_sid_from_sid = lambda sid, namespace: "eio-1"  # type: ignore[method-assign]
    waiting = asyncio.create_task(manager.drained("sid-1", 0.2))
    await asyncio.sleep(0)  # it waits for the queue
    stuck.closed = True  # the client left
    await waiting
    assert given_up == []
    stuck.closed = False  # the same, with the client still there: a slow consumer
    await manager.drained("sid-1", 0.2)
    assert given_up == ["sid-1"]
