"""Redis beyond one healthy node: it restarts empty, stalls, refuses writes; detaches while it is away;
the command pool stays bounded; the registry costs O(replicas) at rest. Each test has a redis-server of
its own, which it restarts, pauses or fills."""

import asyncio
import os
import secrets
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
import socketio

import web.data
from bus import Bus, BusUnavailable, Envelope, SessionNotFound, Settings, Target
from tests.harness import ChatClient, Replica, start_redis, start_replica
from web import ChatServer, User, create_jwt
from web.local import LocalSession
from web.mailbox import Mailbox
from workers import Client

AUTH = "f" * 48


class OwnRedis:
    """A redis-server this test may restart, pause and fill."""

    def __init__(self) -> None:
        self.proc, self.port = start_redis()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def restart_empty(self) -> None:
        self.proc.kill()
        self.proc, _ = start_redis(self.port)

    def pause(self) -> None:
        os.kill(self.proc.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.proc.stop()


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    yield server
    server.stop()


@pytest.fixture
def own_replicas(own_redis: OwnRedis, prefix: str) -> Iterator[Callable[..., Replica]]:
    started: list[Replica] = []

    def start(**env: str) -> Replica:
        settings = {
            "SWITCHBOARD_REDIS_URL": own_redis.url,
            "SWITCHBOARD_KEY_PREFIX": prefix,
            "SWITCHBOARD_AUTH_SECRET": AUTH,
            "SWITCHBOARD_REQUIRE_LOGIN": "false",
            "SWITCHBOARD_REDIS_TIMEOUT_SECONDS": "1",
            **env,
        }
        replica = start_replica(settings, name=f"replica-{len(started)}")
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.process.stop()
        print(f"--- {replica.process.name} ---\n{replica.process.output()}")


def service_headers() -> dict[str, str]:
    token = create_jwt(User("service:faults"), scope="sessions:send", settings=Settings(auth_secret=AUTH))
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


async def post(replica: Replica, session_id: str, text: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=replica.url, timeout=30) as http:
        url = f"/hooks/sessions/{session_id}/messages"
        return await http.post(url, json={"content": text}, headers=service_headers())


async def test_redis_restarting_empty_ends_with_live_sessions_reachable_and_told(
    own_redis: OwnRedis, own_replicas: Callable[..., Replica], clients: Callable[[], ChatClient], prefix: str
) -> None:
    a, b = own_replicas(), own_replicas()
    client = await clients().start(a)
    assert (await post(b, client.session_id, "before")).json()["status"] == "delivered"
    before = await client.next("new_message", lambda m: m["output"] == "before")
    own_redis.restart_empty()
    a.process.wait_for_line("Redis lost data: registered 1 of 1 sessions held here again")
    # Reachable again from the other replica, a worker and a webhook; the client is told of the reset.
    response = await post(b, client.session_id, "after")
    assert response.status_code == 202 and response.json()["status"] == "delivered", response.text
    reset = await client.next("log_reset")
    assert reset["previousEpoch"] == before["epoch"] and reset["epoch"] != before["epoch"]
    after = await client.next("new_message", lambda m: m["output"] == "after")
    assert after["offset"] == "1-0" and after["epoch"] == reset["epoch"]
    async with Client(Settings(redis_url=own_redis.url, key_prefix=prefix)) as worker:
        receipt = await worker.send_to_session(client.session_id, "from a worker")
    assert receipt.status == "delivered" and receipt.epoch == reset["epoch"]
    await client.next("new_message", lambda m: m["output"] == "from a worker")
    # A resume elsewhere keeps the session (its record was registered again with its resume token).
    await client.close()
    a.process.wait_for_line(f"session {client.session_id} detached")
    again = await clients().connect(b, client.resume_auth())
    assert again.session_id == client.session_id
    await again.next("replayed")


async def test_a_stalled_redis_is_a_bounded_503_then_recovers(
    own_redis: OwnRedis, own_replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = own_replicas()
    client = await clients().start(a)
    own_redis.pause()
    try:
        started = time.monotonic()
        response = await post(a, client.session_id, "during the stall")
        took = time.monotonic() - started
        assert response.status_code == 503 and response.json()["error"] == "bus_unavailable", response.text
        assert took < 10, f"a stalled Redis held the webhook {took:.1f}s"  # bounded, not a speed test
        refused = await clients().refused(a)
        assert refused["data"]["reason"] == "bus_unavailable"
        # The connected-but-silent subscription is noticed (pinged, then given up on) within seconds.
        a.process.wait_for_line("bus subscription lost", timeout=15)
    finally:
        own_redis.resume()
    response = await post(a, client.session_id, "after the stall")
    assert response.status_code == 202, response.text
    await client.next("new_message", lambda m: m["output"] == "after the stall")


async def test_a_redis_out_of_memory_is_a_503_not_a_500(
    own_redis: OwnRedis, own_replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = own_replicas()
    client = await clients().start(a)
    admin = redis.Redis.from_url(own_redis.url)
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", "1")
    try:
        response = await post(a, client.session_id, "no room")
        assert response.status_code == 503 and response.json()["error"] == "bus_unavailable", response.text
        assert (await clients().refused(a))["data"]["reason"] == "bus_unavailable"
    finally:
        await admin.config_set("maxmemory", "0")
        await admin.aclose()
    assert (await post(a, client.session_id, "room again")).status_code == 202
    await client.next("new_message", lambda m: m["output"] == "room again")
    assert "Traceback" not in a.process.output()


async def test_a_disconnect_while_redis_is_away_is_recorded_and_ends_once(
    own_redis: OwnRedis, own_replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = own_replicas(SWITCHBOARD_SESSION_GRACE_SECONDS="2")
    client = await clients().start(a)
    await client.next("new_message", lambda m: m["output"].startswith("started"))
    own_redis.pause()
    try:
        await client.close()
        a.process.wait_for_line("waits for the bus")
    finally:
        own_redis.resume()
    a.process.wait_for_line(f"session {client.session_id} detached")
    a.process.wait_for_line(f"chat ended {client.session_id}")
    admin = redis.Redis.from_url(own_redis.url)
    assert await admin.keys("*:session:*") == []  # ended and deleted, nothing left behind
    await admin.aclose()
    assert a.process.output().count(f"chat ended {client.session_id}") == 1


async def test_a_stale_detach_cannot_overwrite_the_new_holder(redis_url: str, prefix: str) -> None:
    async with Bus(Settings(redis_url=redis_url, key_prefix=prefix, replica_id="old")) as old:
        async with Bus(Settings(redis_url=redis_url, key_prefix=prefix, replica_id="new")) as new:
            session_id = "s" * 24
            await old.registry.create(session_id, user=None, thread_id=None, resume_token="t1")
            await new.registry.attach(session_id, "t2")
            assert not await old.registry.detach(session_id, b"", "0-0")
            record = await new.registry.get(session_id)
            assert record is not None and record.connected and record.replica == "new"
            assert await new.registry.detach(session_id, b"", "0-0")


async def test_the_command_pool_is_bounded(
    own_redis: OwnRedis, own_replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = own_replicas(SWITCHBOARD_REDIS_MAX_CONNECTIONS="4")
    admin = redis.Redis.from_url(own_redis.url)
    baseline = len(await admin.client_list())
    made = await asyncio.gather(*(clients().connect(a) for _ in range(40)))
    assert len({c.session_id for c in made}) == 40
    # The replica has its subscriber plus at most 4 command connections (the test holds one too).
    assert len(await admin.client_list()) <= max(baseline, 1) + 5
    await admin.aclose()


async def test_commands_beyond_the_connection_bound_wait_instead_of_failing(
    redis_url: str, prefix: str
) -> None:
    settings = Settings(redis_url=redis_url, key_prefix=prefix, redis_max_connections=2)
    async with Bus(settings) as bus:
        session_id = "p" * 24
        await bus.registry.create(session_id, user=None, thread_id=None, resume_token="t")
        looked_up = await asyncio.gather(*(bus.registry.get(session_id) for _ in range(200)))
        target = Target.session(session_id)
        receipts = await asyncio.gather(
            *(bus.send(Envelope(target, "new_message", {"n": i}, "p")) for i in range(200))
        )
        assert all(record is not None for record in looked_up)
        assert sorted(int(r.offset.split("-")[0]) for r in receipts) == list(range(1, 201))


@pytest.fixture
async def idle_server(redis_url: str, prefix: str) -> AsyncIterator[ChatServer]:
    async with ChatServer(
        Settings(redis_url=redis_url, key_prefix=prefix, session_grace_seconds=0.6)
    ) as server:
        yield server


async def test_redis_load_at_rest_does_not_grow_with_sessions(
    idle_server: ChatServer, redis_url: str
) -> None:
    admin = redis.Redis.from_url(redis_url)
    beats = 0
    beat = idle_server.bus.registry.beat
    ticked = asyncio.Condition()

    async def counting() -> bool:
        nonlocal beats
        lost = await beat()
        async with ticked:
            beats += 1
            ticked.notify_all()
        return lost

    idle_server.bus.registry.beat = counting  # type: ignore[method-assign]

    async def calls_over(n: int) -> int:
        async with ticked:
            await ticked.wait_for(lambda: beats > 0)
            start_beats = beats
        before = sum(v["calls"] for v in (await admin.info("commandstats")).values())
        async with ticked:
            await asyncio.wait_for(ticked.wait_for(lambda: beats >= start_beats + n), 30)
        after = sum(v["calls"] for v in (await admin.info("commandstats")).values())
        return after - before - 2  # the two INFO calls of this measurement

    async def hold(count: int) -> None:
        for _ in range(count):
            session_id = uuid.uuid4().hex
            await idle_server.bus.registry.create(session_id, user=None, thread_id=None, resume_token="t")
            mailbox = Mailbox(session_id, idle_server.bus, _nothing, _nothing)
            local = LocalSession(session_id, session_id, None, None, mailbox, *_limits(idle_server))
            await idle_server.sessions.attach(local)

    await hold(200)
    with_200 = await calls_over(5)
    await hold(1800)
    with_2000 = await calls_over(5)
    await admin.aclose()
    print(f"Redis commands over 5 heartbeats: 200 sessions {with_200}, 2,000 sessions {with_2000}")
    assert with_2000 <= with_200 + 5, (with_200, with_2000)


async def _nothing(*args: object) -> None:
    return None


def _limits(server: ChatServer) -> tuple[object, object]:
    from web.limits import HookQueue

    return HookQueue(server.sessions.spawn, 1), server.limits.events()


async def test_sends_to_a_dead_replicas_session_queue_then_expire(redis_url: str, prefix: str) -> None:
    """A replica that stops beating: its sessions count as disconnected, and the sweep expires them."""
    async with Bus(
        Settings(redis_url=redis_url, key_prefix=prefix, session_grace_seconds=0.9, replica_id="dead")
    ) as dead:
        session_id = "d" * 24
        await dead.registry.beat()
        await dead.registry.create(session_id, user=None, thread_id=None, resume_token="t")
        async with Bus(Settings(redis_url=redis_url, key_prefix=prefix, session_grace_seconds=0.9)) as live:
            record = await live.registry.get(session_id)
            assert record is not None and record.connected
            receipt = await live.send(Envelope(Target.session(session_id), "new_message", {}, "t"))
            assert receipt.status == "queued"  # nobody subscribed: kept for a resume
            deadline = time.monotonic() + 10
            while (record := await live.registry.get(session_id)) is not None and record.connected:
                assert time.monotonic() < deadline, "the dead replica's session still counts as connected"
                await asyncio.sleep(0.1)  # polling a clock-driven state change, bounded
            assert await live.registry.sweep() in (0, 1)
            while await live.registry.get(session_id) is not None:
                assert time.monotonic() < deadline, "the dead replica's session never expired"
                await asyncio.sleep(0.1)
            with pytest.raises(SessionNotFound):
                await live.send(Envelope(Target.session(session_id), "new_message", {}, "t"))


class _Handshakes:
    """Handshakes straight into a ChatServer on the memory bus (socket ids of our own, no sockets):
    what the server would emit to each, and a bus whose next subscriptions fail."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server
        self.emitted: dict[str, list[tuple[str, Any]]] = {}
        self.failing = 0
        self.refused_sessions: list[str] = []
        emit, subscribe = server.sio.emit, server.bus.subscribe

        async def recording_emit(event: str, data: Any = None, to: str = "", **kwargs: Any) -> None:
            self.emitted.setdefault(to, []).append((event, data))
            await emit(event, data, to=to, **kwargs)

        async def flaky_subscribe(target: Target, handler: Any) -> None:
            if self.failing:
                self.failing -= 1
                self.refused_sessions.append(target.id)
                raise BusUnavailable("Redis did not confirm the subscription (injected)")
            await subscribe(target, handler)

        server.sio.emit = recording_emit  # type: ignore[method-assign]
        server.bus.subscribe = flaky_subscribe  # type: ignore[method-assign]

    async def connect(self, sid: str, auth: dict[str, Any]) -> dict[str, str]:
        await self.server._on_connect(sid, {"REMOTE_ADDR": "127.0.0.1"}, auth)
        return next(data for event, data in self.emitted[sid] if event == "session")

    async def detached(self, sid: str) -> tuple[dict[str, str], dict[str, str]]:
        """A new session whose socket `sid` left: its `session` event and the auth that resumes it."""
        session = await self.connect(sid, {})
        await self.server._on_disconnect(sid)
        await _detached(self.server, session["sessionId"])
        return session, {"sessionId": session["sessionId"], "resumeToken": session["resumeToken"]}

    async def refused(self, sid: str, auth: dict[str, Any]) -> Any:
        with pytest.raises(socketio.exceptions.ConnectionRefusedError) as refusal:
            await self.server._on_connect(sid, {"REMOTE_ADDR": "127.0.0.1"}, auth)
        return refusal.value.error_args


async def _detached(server: ChatServer, session_id: str) -> None:
    """Until the disconnect is recorded (the memory bus needs a few turns of the loop, no time)."""
    for _ in range(1000):
        record = await server.bus.registry.get(session_id)
        if record is not None and not record.connected:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"the disconnect of {session_id} was never recorded")


async def test_a_handshake_that_cannot_subscribe_leaves_the_session_as_it_was() -> None:
    async with ChatServer(Settings(key_prefix="handshake")) as server:
        shakes = _Handshakes(server)
        session, resume = await shakes.detached("sid-1")
        # A resume whose subscription fails is refused; the token still resumes, nothing stays here.
        shakes.failing = 1
        refusal = await shakes.refused("sid-2", resume)
        assert refusal["data"]["reason"] == "bus_unavailable"
        assert "sid-2" not in server.sessions.by_sid and session["sessionId"] not in server.sessions.by_id
        record = await server.bus.registry.resumable(session["sessionId"], session["resumeToken"])
        assert record is not None and not record.connected
        again = await shakes.connect("sid-3", resume)
        assert again["sessionId"] == session["sessionId"]
        assert server.sessions.by_sid["sid-3"].id == session["sessionId"]
        # A new session whose subscription fails is not registered at all.
        shakes.failing = 1
        assert (await shakes.refused("sid-4", {}))["data"]["reason"] == "bus_unavailable"
        assert set(server.sessions.by_sid) == {"sid-3"}
        new_id = shakes.refused_sessions[-1]
        assert new_id != session["sessionId"] and await server.bus.registry.get(new_id) is None


async def test_a_handshake_that_cannot_read_its_thread_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def unreachable(bus: Any, thread_id: str) -> None:
        raise BusUnavailable("Redis did not answer (injected)")

    async with ChatServer(Settings(key_prefix="history", data_persistence=True)) as server:
        shakes = _Handshakes(server)
        monkeypatch.setattr(web.data, "thread_history", unreachable)
        created: list[str] = []
        create = server.bus.registry.create

        async def recording_create(session_id: str, **kwargs: Any) -> Any:
            created.append(session_id)
            return await create(session_id, **kwargs)

        monkeypatch.setattr(server.bus.registry, "create", recording_create)
        refusal = await shakes.refused("sid-1", {"threadId": "t-1"})
        assert refusal["data"]["reason"] == "bus_unavailable"
        # Nothing claimed, held or subscribed: no session that no socket holds is kept alive here.
        assert not server.sessions.by_sid and not server.sessions.by_id
        assert "sid-1" not in shakes.emitted
        assert not created


async def test_commands_written_to_a_stalled_redis_are_not_sent_again(prefix: str) -> None:
    """A stalled server may run what it was sent when it wakes: a command written before the stall
    was seen fails (BusUnavailable, its outcome unknown) instead of being sent again on a new
    connection, so a publish never arrives twice."""
    proc, port = start_redis(None, "--enable-debug-command", "local")
    url = f"redis://127.0.0.1:{port}/0"
    admin = redis.Redis.from_url(url)
    settings = Settings(redis_url=url, key_prefix=prefix, redis_timeout_seconds=2)
    try:
        async with Bus(settings) as listener, Bus(settings) as sender:
            session_id = secrets.token_urlsafe(18)
            await sender.registry.create(session_id, user=None, thread_id=None, resume_token="t")
            got: list[str] = []
            sentinel = asyncio.Event()

            async def handler(envelope: Envelope, offset: str, epoch: str) -> None:
                got.append(envelope.payload["n"])
                if envelope.payload["n"] == "sentinel":
                    sentinel.set()

            await listener.subscribe(Target.session(session_id), handler)

            def token(n: str) -> Envelope:
                return Envelope(Target.session(session_id), "stream_token", {"n": n}, "test")

            stall = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", "2.5"))
            await asyncio.sleep(0.05)
            first = asyncio.create_task(sender.store.get(f"{prefix}:any"))  # gives up at t=2: a stall
            await asyncio.sleep(1)
            # Written during the stall, it gives up at t=3: a retry after the stall ends would be in time.
            written = asyncio.create_task(sender.send(token("once"), durable=False))
            with pytest.raises(BusUnavailable):
                await first
            with pytest.raises(BusUnavailable):
                await written
            await stall
            await sender.send(token("sentinel"), durable=False)
            await asyncio.wait_for(sentinel.wait(), 10)
            # At most once: the woken server runs it, or drops it with the connection closed on it.
            assert got.count("once") <= 1 and got[-1] == "sentinel", got
    finally:
        await admin.aclose()
        proc.stop()


async def test_two_handshakes_resuming_one_session_at_once_take_it_one_at_a_time() -> None:
    """A resume token is good for one resume: of two handshakes presenting it at the same time, one
    resumes the session and the other finds the token rotated (a new session), never both."""
    async with ChatServer(Settings(key_prefix="twice")) as server:
        shakes = _Handshakes(server)
        first, resume = await shakes.detached("sid-1")
        a, b = await asyncio.gather(shakes.connect("sid-2", resume), shakes.connect("sid-3", resume))
        assert [a["sessionId"], b["sessionId"]].count(first["sessionId"]) == 1
        holder = "sid-2" if a["sessionId"] == first["sessionId"] else "sid-3"
        assert server.sessions.by_id[first["sessionId"]].sid == holder
        for sid in ("sid-2", "sid-3"):
            assert "session_replaced" not in [event for event, _ in shakes.emitted[sid]]
        for got in (a, b):  # each socket's token resumes what that socket holds
            assert await server.bus.registry.resumable(got["sessionId"], got["resumeToken"]) is not None
        assert not server.sessions._handshakes
