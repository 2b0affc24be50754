"""The bus on a real redis-server (and the embedded memory bus, where both must behave alike):
routing, bad input, logs and offsets, recovery after a lost subscription."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as redis

from bus import Bus, BusUnavailable, Envelope, EnvelopeError, SessionNotFound, Settings, Target, offset_key
from bus.redis_backend import PING_SECONDS
from bus.registry import new_session_id, valid_session_id

SESSION = "S" * 24


@pytest.fixture(params=["redis", "memory"])
async def any_bus(request: pytest.FixtureRequest, settings: Callable[..., Settings]) -> AsyncIterator[Bus]:
    overrides = {"redis_url": None} if request.param == "memory" else {}
    async with Bus(settings(session_log_length=10, replay_batch=7, **overrides)) as bus:
        yield bus


def envelope(text: str, session: str = SESSION) -> Envelope:
    return Envelope(Target.session(session), "new_message", {"output": text}, "test")


async def collect(bus: Bus, target: Target) -> asyncio.Queue[Envelope]:
    queue: asyncio.Queue[Envelope] = asyncio.Queue()

    async def handler(env: Envelope, offset: str, epoch: str) -> None:
        await queue.put(env)

    await bus.subscribe(target, handler)
    return queue


async def test_delivers_to_the_subscribed_session_only(settings: Callable[..., Settings]) -> None:
    async with Bus(settings(replica_id="a")) as a, Bus(settings(replica_id="b")) as b:
        inbox_a = await collect(a, Target.session(SESSION))
        inbox_b = await collect(b, Target.session("O" * 24))
        sent = envelope("hello")
        assert await b.publish(sent) == 1
        assert await asyncio.wait_for(inbox_a.get(), 5) == sent
        assert inbox_b.empty() and b.stats.received == 0


async def test_publish_reports_that_nobody_received_it(bus: Bus) -> None:
    assert await bus.publish(envelope("nobody home")) == 0


async def test_unsubscribe_stops_delivery(bus: Bus) -> None:
    await collect(bus, Target.session(SESSION))
    assert await bus.publish(envelope("one")) == 1
    await bus.unsubscribe(Target.session(SESSION))
    assert await bus.publish(envelope("two")) == 0


async def test_garbage_from_a_rogue_client_does_not_stop_later_deliveries(bus: Bus, redis_url: str) -> None:
    inbox = await collect(bus, Target.session(SESSION))
    channel = bus.channel(Target.session(SESSION))
    rogue = redis.Redis.from_url(redis_url)
    wrong_target = b" " + envelope("misaddressed", session="X" * 24).encode()
    unframed = envelope("no frame").encode()
    bad_offset = b"abc " + envelope("bad offset").encode()
    for garbage in [
        b" \x00garbage",
        b" \x93\x01",
        b" " + b"x" * (2 * 1024 * 1024),
        wrong_target,
        unframed,
        bad_offset,
    ]:
        assert await rogue.publish(channel, garbage) == 1
    await rogue.aclose()
    good = envelope("still here")
    await bus.publish(good)
    assert await asyncio.wait_for(inbox.get(), 5) == good
    assert bus.stats.malformed == 6 and bus.stats.received == 1


async def test_oversized_publish_is_refused(settings: Callable[..., Settings]) -> None:
    async with Bus(settings(max_envelope_bytes=1000)) as small:
        with pytest.raises(EnvelopeError, match="exceeds the limit"):
            await small.publish(envelope("x" * 2000))


async def test_failing_handler_is_counted_and_delivery_goes_on(bus: Bus) -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def handler(env: Envelope, offset: str, epoch: str) -> None:
        if env.payload["output"] == "boom":
            raise RuntimeError("handler bug")
        await seen.put(env.payload["output"])

    await bus.subscribe(Target.session(SESSION), handler)
    await bus.publish(envelope("boom"))
    await bus.publish(envelope("after"))
    assert await asyncio.wait_for(seen.get(), 5) == "after"
    assert bus.stats.failed == 1


async def test_deliveries_resume_after_the_pubsub_connection_is_killed(bus: Bus, redis_url: str) -> None:
    inbox = await collect(bus, Target.session(SESSION))
    admin = redis.Redis.from_url(redis_url)
    for round_ in range(1, 3):
        assert await admin.client_kill_filter(_type="pubsub") >= 1
        await asyncio.wait_for(bus.wait_ready(reconnects=round_), 10)
        sent = envelope(f"after kill {round_}")
        assert await bus.publish(sent) == 1
        assert await asyncio.wait_for(inbox.get(), 5) == sent
    await admin.aclose()


async def test_a_long_catch_up_after_a_reconnect_is_not_taken_for_a_silent_redis(
    settings: Callable[..., Settings], redis_url: str
) -> None:
    """What runs when the subscription is back (re-registering thousands of sessions, say) holds the
    listener; the watchdog, which closes a subscription silent for 3 s, must not close it meanwhile."""
    restores = 0

    async def slow_restore() -> None:
        nonlocal restores
        restores += 1
        await asyncio.sleep(3 * PING_SECONDS + 1)  # the work

    async with Bus(settings(), on_restored=slow_restore) as bus:
        inbox = await collect(bus, Target.session(SESSION))
        admin = redis.Redis.from_url(redis_url)
        assert await admin.client_kill_filter(_type="pubsub") >= 1
        await asyncio.wait_for(bus.wait_ready(reconnects=1), 10)
        await bus.publish(envelope("after the catch-up"))
        assert (await asyncio.wait_for(inbox.get(), 15)).payload["output"] == "after the catch-up"
        assert restores == 1 and bus.transport.reconnects == 1
        await admin.aclose()


async def test_unreachable_redis_raises_bus_unavailable(redis_port: int) -> None:
    from tests.harness import free_port

    with pytest.raises(BusUnavailable):
        async with Bus(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")):
            pass


async def test_registry_round_trip(bus: Bus) -> None:
    await bus.registry.create(SESSION, user={"identifier": "ann"}, thread_id="t1", resume_token="tok")
    record = await bus.registry.get(SESSION)
    assert record is not None and record.connected and record.user == {"identifier": "ann"}
    assert record.thread_id == "t1" and record.replica == bus.settings.replica_id
    assert record.accepts("tok") and not record.accepts("tok2")
    await bus.registry.attach(SESSION, "tok2")
    record = await bus.registry.get(SESSION)
    assert record is not None and record.accepts("tok2") and not record.accepts("tok")  # rotated
    await bus.registry.detach(SESSION, b"\x80", "3-0")
    record = await bus.registry.get(SESSION)
    assert record is not None and not record.connected and (record.data, record.acked) == (b"\x80", "3-0")
    assert await bus.registry.get("not a valid id!") is None


async def test_a_detached_session_expires_after_its_grace_period(
    settings: Callable[..., Settings], redis_url: str
) -> None:
    async with Bus(settings(session_grace_seconds=0.5)) as bus:
        await bus.registry.create(SESSION, user=None, thread_id=None, resume_token="tok")
        await bus.registry.detach(SESSION, b"", "0-0")
        admin = redis.Redis.from_url(redis_url)
        assert 0 < await admin.pttl(bus.keys.session(SESSION)) <= 500
        await admin.aclose()
        # A real TTL has to run out: no event to await, so poll, with a deadline that only bounds a failure.
        deadline = asyncio.get_running_loop().time() + 30
        while await bus.registry.get(SESSION) is not None:
            assert asyncio.get_running_loop().time() < deadline, "the session never expired"
            await asyncio.sleep(0.05)


async def session_exists(bus: Bus, session_id: str = SESSION) -> None:
    await bus.registry.create(session_id, user=None, thread_id=None, resume_token="tok")


async def test_send_logs_and_publishes_atomically_with_ordered_offsets(any_bus: Bus) -> None:
    bus = any_bus
    await session_exists(bus)
    inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def handler(env: Envelope, offset: str, epoch: str) -> None:
        await inbox.put((env.payload["output"], offset))

    await bus.subscribe(Target.session(SESSION), handler)
    receipts = [await bus.send(envelope(f"m{i}")) for i in range(5)]
    assert all(r.status == "delivered" and r.delivered == 1 for r in receipts)
    offsets = [r.offset for r in receipts]
    assert offsets == sorted(offsets, key=offset_key) and len(set(offsets)) == 5
    assert [await inbox.get() for _ in range(5)] == [(f"m{i}", offsets[i]) for i in range(5)]
    ephemeral = await bus.send(envelope("token"), durable=False)
    assert ephemeral.offset == "" and await inbox.get() == ("token", "")
    logged = (await bus.read_log(SESSION, "0-0")).entries
    assert [(o, e.payload["output"]) for o, e in logged] == [(offsets[i], f"m{i}") for i in range(5)]
    assert [o for o, _ in (await bus.read_log(SESSION, offsets[2])).entries] == offsets[3:]


async def test_send_to_a_missing_session_raises_and_logs_nothing(any_bus: Bus) -> None:
    bus = any_bus
    with pytest.raises(SessionNotFound):
        await bus.send(envelope("lost"))
    assert (await bus.read_log(SESSION, "0-0")).entries == []
    assert await bus.lost_after(SESSION, "0-0") == (False, "")


async def test_send_without_a_subscriber_is_queued_in_the_log(any_bus: Bus) -> None:
    bus = any_bus
    await session_exists(bus)
    receipt = await bus.send(envelope("later"))
    assert receipt.status == "queued" and receipt.delivered == 0
    assert [e.payload["output"] for _, e in (await bus.read_log(SESSION, "0-0")).entries] == ["later"]


async def test_replay_reads_are_bounded_and_the_log_is_trimmed(any_bus: Bus) -> None:
    bus = any_bus
    await session_exists(bus)
    offsets = [(await bus.send(envelope(f"m{i}"))).offset for i in range(300)]
    assert offsets == [f"{n}-0" for n in range(1, 301)]  # contiguous per session
    batch = await bus.read_log(SESSION, "0-0")
    assert len(batch.entries) == 7 and batch.more  # never more than the batch size per read
    first = batch.entries[0][0]
    assert offset_key(first) > offset_key(offsets[0])  # MAXLEN ~ trimmed the oldest
    assert await bus.lost_after(SESSION, "0-0") == (True, first)
    just_before = f"{offset_key(first)[0] - 1}-0"
    assert await bus.lost_after(SESSION, just_before) == (False, first)
    assert await bus.lost_after(SESSION, offsets[-1]) == (False, first)


async def test_a_retried_send_is_logged_once_and_unlogged_misses_are_dropped(any_bus: Bus) -> None:
    bus = any_bus
    await session_exists(bus)
    sent = envelope("once")
    first, retry = await bus.send(sent), await bus.send(sent)  # as redis-py retries after a lost reply
    assert retry.offset == first.offset == "1-0"
    assert [o for o, _ in (await bus.read_log(SESSION, "0-0")).entries] == ["1-0"]
    assert (await bus.send(envelope("typing"), durable=False)).status == "dropped"


async def test_the_log_lives_exactly_as_long_as_the_session(bus: Bus, redis_url: str) -> None:
    await session_exists(bus)
    await bus.send(envelope("kept"))
    admin = redis.Redis.from_url(redis_url)
    log_key = bus.keys.session_log(SESSION)
    await admin.pexpire(log_key, 1000)  # as if the last heartbeat were long ago
    await bus.registry.detach(SESSION, b"", "0-0")
    grace_ms = bus.settings.session_grace_seconds * 1000
    assert grace_ms - 5000 < await admin.pttl(log_key) <= grace_ms
    assert grace_ms - 5000 < await admin.pttl(bus.keys.session(SESSION)) <= grace_ms
    await admin.aclose()


def test_session_ids_are_valid_and_never_look_like_a_command_line_option() -> None:
    ids = [new_session_id() for _ in range(5000)]  # about 1 in 64 token_urlsafe ids starts with "-"
    assert len(set(ids)) == 5000
    assert all(valid_session_id(i) and len(i) == 24 and not i.startswith("-") for i in ids)


async def test_a_log_keeps_only_its_last_minutes(
    settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SWITCHBOARD_SESSION_LOG_SECONDS: entries older than it go at the next send (the send script reads
    the time the sender gives it: a clock of the test's own, not a wait)."""
    import bus.redis_backend

    clock = [1_800_000_000.0]
    real_monotonic = time.monotonic

    class Clock:
        monotonic = staticmethod(real_monotonic)

        @staticmethod
        def time() -> float:
            return clock[0]

    monkeypatch.setattr(bus.redis_backend, "time", Clock)
    async with Bus(settings(session_log_seconds=60)) as b:
        session_id = "a" * 24
        await b.registry.create(session_id, user=None, thread_id=None, resume_token="t")
        target = Target.session(session_id)
        for i in range(5):
            await b.send(Envelope(target, "new_message", {"n": i}, "t"))
            clock[0] += 10  # 5 messages 10 s apart: all within the minute
        assert (await b.log_bounds(session_id))[:2] == ("1-0", "5-0")
        clock[0] += 25  # the first two are now over 60 s old (75 s and 65 s)
        await b.send(Envelope(target, "new_message", {"n": 5}, "t"))
        first, last, _ = await b.log_bounds(session_id)
        assert (first, last) == ("3-0", "6-0")
        assert [e.payload["n"] for _, e in (await b.read_log(session_id, "0-0")).entries] == [2, 3, 4, 5]
        assert await b.lost_after(session_id, "0-0") == (True, "3-0")
        clock[0] += 3600  # everything but the newest, which always stays
        await b.send(Envelope(target, "new_message", {"n": 6}, "t"))
        assert (await b.log_bounds(session_id))[:2] == ("7-0", "7-0")
