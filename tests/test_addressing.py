"""Users and everyone: user-addressed and broadcast sends across replicas; worker clients and receipts."""

import asyncio
from collections.abc import Callable

import pytest

from bus import BusUnavailable, Settings
from tests.harness import ChatClient, Replica, free_port, start_redis
from web import User, create_jwt
from workers import Client, SyncClient

SECRET = "u" * 48


def token(identifier: str) -> dict[str, str]:
    return {"token": create_jwt(User(identifier), settings=Settings(auth_secret=SECRET))}


async def received_on(replica: Replica) -> int:
    return int((await replica.aget("/stats")).json()["received"])


async def test_user_messages_reach_each_of_the_users_sessions_once_and_no_other_replica(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], settings: Callable[..., Settings]
) -> None:
    a, b, c = (replicas(env={"SWITCHBOARD_AUTH_SECRET": SECRET}) for _ in range(3))
    ann_a = await clients().connect(a, token("ann"))
    ann_b = await clients().connect(b, token("ann"))
    bob_c = await clients().connect(c, token("bob"))
    before_c = await received_on(c)
    async with Client(settings()) as client:
        receipt = await client.send_to_user("ann", "for ann")
        assert receipt.target.kind == "user" and receipt.delivered == 2 and receipt.status == "delivered"
        for ann in (ann_a, ann_b):
            await ann.next("new_message", lambda m: m["output"] == "for ann")
        # A marker to bob on c proves c's deliveries are flowing, so silence about ann is real.
        await client.send_to_user("bob", "for bob")
        await bob_c.next("new_message", lambda m: m["output"] == "for bob")
        await client.send_to_session(ann_a.session_id, "marker")
        await ann_a.next("new_message", lambda m: m["output"] == "marker")
    assert ann_a.outputs() == ["for ann", "marker"] and ann_b.outputs() == ["for ann"]
    assert bob_c.outputs() == ["for bob"]
    assert await received_on(c) == before_c + 1  # only bob's message reached replica c


async def test_user_channel_is_dropped_when_the_last_session_leaves(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], settings: Callable[..., Settings]
) -> None:
    a = replicas(env={"SWITCHBOARD_AUTH_SECRET": SECRET})
    first, second = clients(), clients()
    await first.connect(a, token("ann"))
    await second.connect(a, token("ann"))
    async with Client(settings()) as client:
        assert (await client.send_to_user("ann", "both")).delivered == 1  # one replica, two sockets
        await first.next("new_message", lambda m: m["output"] == "both")
        await second.next("new_message", lambda m: m["output"] == "both")
        await first.close()
        await asyncio.to_thread(a.process.wait_for_line, f"session {first.session_id} detached")
        assert (await client.send_to_user("ann", "one left")).delivered == 1
        await second.next("new_message", lambda m: m["output"] == "one left")
        await second.close()
        await asyncio.to_thread(a.process.wait_for_line, f"session {second.session_id} detached")
        assert (await client.send_to_user("ann", "nobody")).delivered == 0


async def test_broadcast_reaches_every_live_session_on_every_replica_exactly_once(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], settings: Callable[..., Settings]
) -> None:
    a, b = replicas(), replicas()
    sockets = [await clients().connect(a), await clients().connect(a), await clients().connect(b)]
    async with Client(settings()) as client:
        receipt = await client.broadcast("to everyone", author="ops")
        assert receipt.delivered == 2  # two replicas
        for socket in sockets:
            await socket.next("new_message", lambda m: m["output"] == "to everyone")
            await client.send_to_session(socket.session_id, "marker")
            await socket.next("new_message", lambda m: m["output"] == "marker")
    assert all(s.outputs() == ["to everyone", "marker"] for s in sockets)


async def test_sync_client_returns_receipts_and_queues_for_absent_sockets(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], settings: Callable[..., Settings]
) -> None:
    a = replicas()
    client = await clients().connect(a)
    with SyncClient(settings()) as sync:
        live = await asyncio.to_thread(sync.send_to_session, client.session_id, "live", event="progress")
        assert live.status == "delivered" and live.offset
        await client.next("progress", lambda e: e["content"] == "live")
        await client.close()
        await asyncio.to_thread(a.process.wait_for_line, f"session {client.session_id} detached")
        queued = await asyncio.to_thread(sync.send_to_session, client.session_id, "later")
        assert queued.status == "queued" and queued.delivered == 0
        with pytest.raises(ValueError, match="protocol event"):
            sync.send_to_session(client.session_id, "x", event="session")


async def test_redis_going_away_is_an_exception_never_a_silent_drop() -> None:
    proc, port = start_redis()
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", key_prefix="gone")
    async with Client(settings) as client:
        assert (await client.broadcast("while up")).delivered == 0
        proc.stop()
        with pytest.raises(BusUnavailable):
            await client.broadcast("while down")
    with pytest.raises(BusUnavailable):
        async with Client(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")):
            pass
