"""The bus on a real redis-server: routing, bad input, and recovery after a lost subscription."""

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as redis

from bus import Bus, BusUnavailable, Envelope, EnvelopeError, Settings, Target

SESSION = "S" * 24


def envelope(text: str, session: str = SESSION) -> Envelope:
    return Envelope(Target.session(session), "new_message", {"output": text}, "test")


async def collect(bus: Bus, target: Target) -> asyncio.Queue[Envelope]:
    queue: asyncio.Queue[Envelope] = asyncio.Queue()

    async def handler(env: Envelope) -> None:
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
    wrong_target = envelope("misaddressed", session="X" * 24).encode()
    for garbage in [b"\x00garbage", b"\x93\x01", b"x" * (2 * 1024 * 1024), wrong_target]:
        assert await rogue.publish(channel, garbage) == 1
    await rogue.aclose()
    good = envelope("still here")
    await bus.publish(good)
    assert await asyncio.wait_for(inbox.get(), 5) == good
    assert bus.stats.malformed == 4 and bus.stats.received == 1


async def test_oversized_publish_is_refused(settings: Callable[..., Settings]) -> None:
    async with Bus(settings(max_envelope_bytes=1000)) as small:
        with pytest.raises(EnvelopeError, match="exceeds the limit"):
            await small.publish(envelope("x" * 2000))


async def test_failing_handler_is_counted_and_delivery_goes_on(bus: Bus) -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def handler(env: Envelope) -> None:
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


async def test_unreachable_redis_raises_bus_unavailable(redis_port: int) -> None:
    from tests.harness import free_port

    with pytest.raises(BusUnavailable):
        async with Bus(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")):
            pass


async def test_registry_round_trip_and_expiry(settings: Callable[..., Settings]) -> None:
    async with Bus(settings(session_grace_seconds=0.3)) as bus:
        await bus.registry.create(SESSION, user={"identifier": "ann"}, thread_id="t1", resume_token="tok")
        record = await bus.registry.get(SESSION)
        assert record is not None and record.connected and record.user == {"identifier": "ann"}
        assert record.thread_id == "t1" and record.replica == bus.settings.replica_id
        assert record.accepts("tok") and not record.accepts("tok2")
        await bus.registry.detach(SESSION, b"")
        record = await bus.registry.get(SESSION)
        assert record is not None and not record.connected
        assert await bus.registry.get("not a valid id!") is None
        await asyncio.sleep(0.5)  # a real TTL has to run out: there is no event to await
        assert await bus.registry.get(SESSION) is None
