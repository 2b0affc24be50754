"""Hostile clients and callers against real replicas: each attack an audit found, and the limits."""

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import msgpack
import pytest
import redis.asyncio as redis
import socketio

from bus import Bus, Envelope, EnvelopeError, Settings, Target
from bus.keys import byte_count
from tests.harness import ChatClient, Replica
from web import User, create_jwt
from workers import Client

AUTH = "h" * 48


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def session_records(admin: redis.Redis, prefix: str) -> dict[str, dict[bytes, bytes]]:
    records = {}
    async for key in admin.scan_iter(f"{prefix}:session:*:info"):
        records[key.decode()] = await admin.hgetall(key)
    return records


async def test_forged_connect_and_disconnect_events_never_reach_the_handlers(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], admin: redis.Redis, prefix: str
) -> None:
    a = replicas()
    client = await clients().start(a)
    for _ in range(20):
        await client.sio.emit("connect", {"sessionId": "forged"})
        await client.sio.emit("disconnect", "forged")
    # The forged disconnects did not detach the session: it is still delivered to.
    assert (await a.aget(f"/hello/{client.session_id}")).status_code == 200
    await client.next("new_message", lambda m: m["output"] == "Hello World")
    records = await session_records(admin, prefix)
    assert len(records) == 1, records  # the forged connects created no sessions
    await client.close()
    a.process.wait_for_line(f"session {client.session_id} detached")
    (record,) = (await session_records(admin, prefix)).values()
    assert record[b"connected"] == b"0"


async def test_non_finite_numbers_are_refused_at_every_entry(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], settings: Callable[..., Settings]
) -> None:
    a = replicas(env={"SWITCHBOARD_AUTH_SECRET": AUTH, "SWITCHBOARD_REQUIRE_LOGIN": "false"})
    client = await clients().start(a)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(EnvelopeError, match="finite"):
            Envelope(Target.session("s" * 24), "new_message", {"metadata": {"x": [bad]}}, "t").encode()
        async with Client(settings()) as worker:
            with pytest.raises(EnvelopeError, match="finite"):
                await worker.send_to_session(client.session_id, "x", metadata={"x": bad})
    token = create_jwt(User("service:x"), scope="sessions:send", settings=Settings(auth_secret=AUTH))
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
        for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
            body = '{"content": "x", "metadata": {"x": ' + literal + "}}"
            url = f"/hooks/sessions/{client.session_id}/messages"
            response = await http.post(url, content=body, headers=headers)
            assert response.status_code == 422, (literal, response.text)
        ok = await http.post(
            f"/hooks/sessions/{client.session_id}/messages", json={"content": "fine"}, headers=headers
        )
        assert ok.status_code == 202
    # Nothing non-finite was emitted: the next message is the fine one, and the socket never looped.
    message = await client.next("new_message", lambda m: m["output"] in ("x", "fine"))
    assert message["output"] == "fine"
    assert not client.received("disconnect")


async def test_a_huge_last_offset_cannot_silence_a_session(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = replicas()
    first = await clients().start(a)
    assert (await a.aget(f"/hello/{first.session_id}")).status_code == 200
    await first.next("new_message", lambda m: m["output"] == "Hello World")
    await first.close()
    for huge in ("9999999999-0", "99999999999999999999-0"):
        again = await clients().connect(a, first.resume_auth(lastOffset=huge))
        await again.next("replayed")
        # Not an offset this session reached: the client cannot acknowledge it.
        assert await again.sio.call("ack", {"offset": huge}, timeout=10) is False
        assert (await a.aget(f"/hello/{again.session_id}")).status_code == 200
        delivered = await again.next("new_message", lambda m: m["output"] == "Hello World")
        assert delivered["offset"]
        first = again
        await again.close()


async def test_bad_offsets_and_event_arguments_are_answered_quietly(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = replicas()
    client = await clients().start(a)
    for args in [(), (1, 2, 3), ("x",), ({"message": {"output": 5}},), ({"message": "x" * 10},)]:
        await client.sio.emit("client_message", args)
        await client.sio.emit("ack", args)
        await client.sio.emit("connection_successful", args)
    await client.sio.emit("no_such_event", {"x": 1})
    assert await client.sio.call("ack", {"offset": "1" * 30 + "-0"}, timeout=10) is False
    assert (await client.say("still here"))["output"].endswith("still here")
    assert "Traceback" not in a.process.output()


async def test_hooks_run_one_at_a_time_and_queued_ones_end_with_the_socket(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = replicas(env={"CHAT_MODULE": "hostile_chat.py", "SWITCHBOARD_EVENTS_PER_SECOND": "100"})
    client = await clients().start(a)
    for n in range(3):
        await client.sio.emit("client_message", {"message": {"output": f"slow {n}"}})
    for n in range(3):
        reply = await client.next("new_message", lambda m: m["output"].startswith("done"))
        assert reply["output"] == f"done slow {n} overlap=1"  # in arrival order, never two at once
    for n in range(10):
        await client.sio.emit("client_message", {"message": {"output": f"slow queued {n}"}})
    await client.next("task_start")  # the first one runs
    await client.close()
    again = await clients().connect(a, client.resume_auth())
    await again.sio.emit("client_message", {"message": {"output": "marker"}})
    await again.next("new_message", lambda m: m["output"].startswith("done marker"))
    ran = [m["output"] for m in again.received("new_message") if "queued" in m["output"]]
    assert len(ran) <= 1, ran  # at most the one in flight; the queued ones were dropped


async def test_event_floods_are_rate_limited_with_an_explicit_event(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    env = {"SWITCHBOARD_EVENTS_PER_SECOND": "2", "SWITCHBOARD_EVENT_BURST": "5"}
    a = replicas(env=env)
    client = await clients().start(a)
    for n in range(40):
        await client.sio.emit("client_message", {"message": {"output": f"flood {n}"}})
    limited = await client.next("rate_limited")
    assert limited["reason"] == "events" and limited["retryAfterMs"] > 0
    stats = (await a.aget("/stats")).json()
    assert stats["refused"]["events"] >= 30


async def test_handshakes_are_limited_per_address_and_sessions_per_user(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    env = {
        "SWITCHBOARD_HANDSHAKES_PER_MINUTE": "5",
        "SWITCHBOARD_AUTH_SECRET": AUTH,
        "SWITCHBOARD_REQUIRE_LOGIN": "false",
    }
    a = replicas(env=env)
    for _ in range(5):
        await (await clients().connect(a)).close()
    refusal = await clients().refused(a)
    assert refusal["data"]["reason"] == "rate_limited" and refusal["data"]["retryAfterMs"] > 0
    b = replicas(env={"SWITCHBOARD_SESSIONS_PER_USER": "2", "SWITCHBOARD_AUTH_SECRET": AUTH})
    token = {"token": create_jwt(User("ann"), settings=Settings(auth_secret=AUTH))}
    kept = [await clients().connect(b, token) for _ in range(2)]
    refusal = await clients().refused(b, token)
    assert refusal["data"]["reason"] == "too_many_sessions"
    await kept[0].close()
    b.process.wait_for_line(f"session {kept[0].session_id} detached")
    assert (await clients().connect(b, token)).session_id  # a slot was freed


async def test_handshakes_are_limited_per_user_per_minute(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = replicas(env={"SWITCHBOARD_USER_HANDSHAKES_PER_MINUTE": "3", "SWITCHBOARD_AUTH_SECRET": AUTH})

    def token(name: str) -> dict[str, str]:
        return {"token": create_jwt(User(name), settings=Settings(auth_secret=AUTH))}

    for _attempt in range(5):  # the window is the wall-clock minute: a burst across its end is rerun
        user, start = f"ann-{uuid.uuid4().hex[:8]}", time.time()
        for _ in range(3):
            await (await clients().connect(a, token(user))).close()
        fourth = clients()
        try:
            await fourth.connect(a, token(user))
        except socketio.exceptions.ConnectionError:
            refusal = await fourth.next("connect_error")
            break
        assert int(start // 60) != int(time.time() // 60), "a 4th handshake in one minute was let in"
        await fourth.close()
    else:
        raise AssertionError("5 bursts in a row straddled a minute boundary: is the clock jumping?")
    assert refusal["message"] == "too many connections for this user"
    assert refusal["data"]["reason"] == "rate_limited" and 0 < refusal["data"]["retryAfterMs"] <= 60_000
    # Per user: another user from the same address is let in.
    assert (await clients().connect(a, token(f"bob-{uuid.uuid4().hex[:8]}"))).session_id
    assert (await a.aget("/stats")).json()["refused"]["rate_limited"] == 1


async def test_a_full_hook_queue_refuses_a_message_as_busy(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    env = {
        "CHAT_MODULE": "hostile_chat.py",
        "SWITCHBOARD_HOOK_QUEUE": "2",
        "SWITCHBOARD_EVENTS_PER_SECOND": "100",
    }
    a = replicas(env=env)
    client = await clients().start(a)
    await client.sio.emit("client_message", {"message": {"output": "block"}})
    await client.next("new_message", lambda m: m["output"] == "blocking block")  # it runs: none waits
    for n in range(3):  # two wait behind it, the third finds the queue full
        await client.sio.emit("client_message", {"message": {"output": f"queued {n}"}})
    assert await client.next("message_refused") == {"reason": "busy"}
    await client.sio.emit("client_message", {"message": {"output": "queued 3"}})
    assert await client.next("message_refused") == {"reason": "busy"}
    assert (await a.aget("/stats")).json()["refused"]["hook_queue"] == 2
    assert not [m for m in client.received("new_message") if m["output"].startswith("done")]


async def test_the_running_hook_is_cancelled_when_the_session_ends_after_its_grace_period(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    grace = 2.0
    env = {"CHAT_MODULE": "hostile_chat.py", "SWITCHBOARD_SESSION_GRACE_SECONDS": str(grace)}
    a = replicas(env=env)
    client = await clients().start(a)
    await client.sio.emit("client_message", {"message": {"output": "block forever"}})
    await client.next("new_message", lambda m: m["output"] == "blocking block forever")
    closed = time.monotonic()
    await client.close()
    await asyncio.to_thread(a.process.wait_for_line, f"session {client.session_id} detached")
    assert "hook cancelled" not in a.process.output()  # the socket left; the session did not end yet
    await asyncio.to_thread(a.process.wait_for_line, "hook cancelled: block forever", 30)
    assert time.monotonic() - closed >= grace  # at the end of the grace period, not at the disconnect
    assert a.process.output().count("hook cancelled") == 1


async def test_oversized_client_messages_are_refused_explicitly(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = replicas(env={"SWITCHBOARD_MAX_MESSAGE_BYTES": "1000"})
    client = await clients().start(a)
    await client.sio.emit("client_message", {"message": {"output": "x" * 1001}})
    refused = await client.next("message_refused")
    assert refused == {"reason": "too_large", "limit": 1000}
    assert (await client.say("small"))["output"].endswith("small")


async def test_a_deeply_nested_webhook_body_is_a_400(replicas: Callable[..., Replica]) -> None:
    a = replicas(env={"SWITCHBOARD_AUTH_SECRET": AUTH})
    token = create_jwt(User("service:x"), scope="sessions:send", settings=Settings(auth_secret=AUTH))
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    body = '{"content": "x", "metadata": {"a": ' + "[" * 30_000 + "]" * 30_000 + "}}"
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
        response = await http.post("/hooks/broadcast", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "malformed_body", "message": "the body nests too deeply"}
    assert "Traceback" not in a.process.output()


async def thread_keys(admin: redis.Redis, prefix: str) -> set[str]:
    return {key.decode() async for key in admin.scan_iter(f"{prefix}:thread:*")}


async def test_threads_are_created_by_their_first_write(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], admin: redis.Redis, prefix: str
) -> None:
    a = replicas(env={"SWITCHBOARD_DATA_PERSISTENCE": "true"})
    quiet = await clients().connect(a)  # connected, never started, never written to
    asked = await clients().connect(a, {"threadId": "never-written"})  # a thread id asked for, unused
    assert quiet.session_id and asked.session_id
    assert await thread_keys(admin, prefix) == set()
    said = (await a.aget(f"/say/{quiet.session_id}/first")).json()
    await quiet.next("new_message", lambda m: m["output"] == "first")
    thread = said["thread"]
    assert thread and await thread_keys(admin, prefix) == {
        f"{prefix}:thread:{{{thread}}}:owner",
        f"{prefix}:thread:{{{thread}}}:history",
        byte_count(f"{prefix}:thread:{{{thread}}}:history"),
    }


async def test_thread_ownership_is_checked_on_every_write_on_a_replica(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], admin: redis.Redis, prefix: str
) -> None:
    """ann and bob both bind the same unwritten thread; ann writes first, so the thread is hers:
    bob's messages still reach bob, but never her thread's history."""
    a = replicas(env={"SWITCHBOARD_DATA_PERSISTENCE": "true", "SWITCHBOARD_AUTH_SECRET": AUTH})
    tokens = Settings(auth_secret=AUTH)
    ann, bob = [
        await clients().connect(a, {"threadId": "t-race", "token": create_jwt(User(name), settings=tokens)})
        for name in ("ann", "bob")
    ]
    said_by_ann = (await a.aget(f"/say/{ann.session_id}/ann-first")).json()
    said_to_bob = (await a.aget(f"/say/{bob.session_id}/bob-second")).json()
    assert said_by_ann["thread"] == said_to_bob["thread"] == "t-race"  # both were bound to it
    await bob.next("new_message", lambda m: m["output"] == "bob-second")  # delivered all the same
    history = await admin.lrange(f"{prefix}:thread:{{t-race}}:history", 0, -1)
    assert [msgpack.unpackb(item)[1]["output"] for item in history] == ["ann-first"]
    await asyncio.to_thread(a.process.wait_for_line, "refused a write to thread t-race")
    again = await clients().connect(
        a, {"threadId": "t-race", "token": create_jwt(User("ann"), settings=tokens)}
    )
    assert [e["message"]["output"] for e in (await again.next("thread_history"))["events"]] == ["ann-first"]


async def test_thread_ownership_is_checked_on_every_write(settings: Callable[..., Settings]) -> None:
    from web.data import BusDataLayer

    async with Bus(settings(data_persistence=True, thread_history_bytes=2000)) as bus:
        layer = BusDataLayer(bus)
        await layer.append("t-shared", "new_message", {"output": "ann's"}, "ann")
        await layer.append("t-shared", "new_message", {"output": "bob's"}, "bob")  # refused
        owner, events = await layer.history("t-shared")
        assert owner == "ann" and [m["output"] for _, m in events] == ["ann's"]
        for n in range(50):  # the history is capped in bytes too
            await layer.append("t-shared", "new_message", {"output": f"{n:03d}" + "x" * 100}, "ann")
        _, events = await layer.history("t-shared")
        assert sum(len(json.dumps(m)) for _, m in events) <= 2000
        assert events[-1][1]["output"].startswith("049")


async def test_session_logs_are_capped_in_bytes(settings: Callable[..., Settings]) -> None:
    async with Bus(settings(session_log_bytes=10_000)) as bus:
        session_id = "b" * 24
        await bus.registry.create(session_id, user=None, thread_id=None, resume_token="t")
        for n in range(100):
            payload = {"x": "y" * 1000, "n": n}
            await bus.send(Envelope(Target.session(session_id), "new_message", payload, "t"))
        batch = await bus.read_log(session_id, "0-0")
        kept = [e for _, e in batch.entries]
        while batch.more:
            batch = await bus.read_log(session_id, batch.last)
            kept += [e for _, e in batch.entries]
        assert kept[-1].payload["n"] == 99
        assert sum(len(e.encode()) for e in kept) <= 10_000
        assert (await bus.lost_after(session_id, "0-0"))[0]  # a resume is told it was truncated


def test_the_memory_bus_forgets_expired_keys() -> None:
    from bus.memory_backend import _hub

    async def scenario() -> None:
        async with Bus(Settings()) as bus:
            await bus.store.claim("tmp:claim", b"1", 0.01)
            await bus.store.count("tmp:count", 0.01)
            await bus.store.list_append("tmp:list", b"x", maxlen=10, max_bytes=100, ttl=0.01)
            await asyncio.sleep(1.1)  # let the keys expire and the once-a-second sweep come due
            await bus.store.store("tmp:other", b"1", 60)  # any write sweeps what expired
            assert not {"tmp:claim", "tmp:count", "tmp:list"} & set(_hub.keys)

    asyncio.run(scenario())


def test_the_forged_event_guard_still_hooks_into_python_socketio() -> None:
    """The guard overrides AsyncServer._handle_event: if python-socketio renames it, fail here."""
    from web.protocol import SOCKETIO_EVENTS

    assert {"connect", "disconnect", "connect_error"} <= SOCKETIO_EVENTS
    assert "_handle_event" in vars(socketio.AsyncServer), (
        "python-socketio no longer has AsyncServer._handle_event: update _SocketServer in web/server.py"
    )
