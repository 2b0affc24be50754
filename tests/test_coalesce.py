"""Stream tokens sent close together travel as one envelope (bus/coalesce.py), in order, on the memory bus."""

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from bus import Bus, Envelope, Settings, Target
from bus.coalesce import MAX_HELD_BYTES, Coalescer
from web.protocol import join_tokens


class Received:
    """The envelopes a subscriber of one session got, and an event per arrival."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.arrived = asyncio.Condition()

    async def handler(self, envelope: Envelope, offset: str, epoch: str) -> None:
        async with self.arrived:
            self.envelopes.append(envelope)
            self.arrived.notify_all()

    async def count(self, n: int) -> list[Envelope]:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.envelopes) >= n), 10)
        return self.envelopes


async def session(bus: Bus) -> tuple[str, Received]:
    session_id = secrets.token_urlsafe(18)
    await bus.registry.create(session_id, user=None, thread_id=None, resume_token="t")
    received = Received()
    await bus.subscribe(Target.session(session_id), received.handler)
    return session_id, received


def token(session_id: str, text: str, message: str = "m1", sequence: bool = False) -> Envelope:
    payload = {"id": message, "token": text, "isSequence": sequence, "isInput": False}
    return Envelope(Target.session(session_id), "stream_token", payload, "test")


@pytest.fixture
async def slow_window() -> AsyncIterator[Bus]:
    """A window far longer than any test: what is held goes only when another send flushes it."""
    async with Bus(Settings(stream_coalesce_seconds=60)) as bus:
        yield bus


async def test_a_first_token_goes_at_once_and_the_next_ones_travel_joined_before_the_next_event(
    slow_window: Bus,
) -> None:
    bus = slow_window
    session_id, received = await session(bus)
    assert await bus.stream(token(session_id, "a"), join_tokens) is None  # no receipt of its own
    assert [e.payload["token"] for e in await received.count(1)] == ["a"]
    for text in ("b", "c", "d"):
        assert await bus.stream(token(session_id, text), join_tokens) is None  # held
    await bus.send(Envelope(Target.session(session_id), "update_message", {"id": "m1"}, "test"))
    events = await received.count(3)
    assert [(e.event, e.payload.get("token")) for e in events] == [
        ("stream_token", "a"),
        ("stream_token", "bcd"),
        ("update_message", None),
    ]
    assert bus._streams.merged == 2


async def test_tokens_that_come_while_one_is_on_its_way_travel_joined() -> None:
    """No window at all between sends: the tokens a producer makes while one is sent wait for it."""
    async with Bus(Settings(stream_coalesce_seconds=1e-6)) as bus:
        session_id, received = await session(bus)
        for text in "abcdef":  # no await gives the first send a turn before the others come
            await bus.stream(token(session_id, text), join_tokens)
        await bus.send(Envelope(Target.session(session_id), "update_message", {"id": "m1"}, "test"))
        events = await received.count(3)
        assert [e.payload.get("token") for e in events] == ["a", "bcdef", None]


async def test_a_held_payload_past_its_bound_makes_the_sender_wait(slow_window: Bus) -> None:
    bus = slow_window
    session_id, received = await session(bus)
    big = "x" * (MAX_HELD_BYTES // 2 - 1)
    for _ in range(4):
        await bus.stream(token(session_id, big), join_tokens)
    await bus.send(Envelope(Target.session(session_id), "update_message", {"id": "m1"}, "test"))
    events = await received.count(4)
    # The first goes alone; two fit one held envelope; the fourth waited for them and went last.
    assert [len(e.payload.get("token", "")) for e in events] == [len(big), 2 * len(big), len(big), 0]


async def test_tokens_of_another_message_are_not_joined_and_keep_their_order(slow_window: Bus) -> None:
    bus = slow_window
    session_id, received = await session(bus)
    await bus.stream(token(session_id, "a"), join_tokens)
    await bus.stream(token(session_id, "b"), join_tokens)
    await bus.stream(token(session_id, "x", message="m2"), join_tokens)  # sends m1's "b" first
    await bus.stream(token(session_id, "y", message="m2"), join_tokens)
    await bus.send(Envelope(Target.session(session_id), "new_message", {"id": "m3"}, "test"))
    events = await received.count(4)
    assert [(e.payload["id"], e.payload.get("token")) for e in events] == [
        ("m1", "a"),
        ("m1", "b"),
        ("m2", "xy"),
        ("m3", None),
    ]


async def test_a_sequence_token_replaces_what_was_held() -> None:
    held = {"id": "m", "token": "abc", "isSequence": False, "isInput": False}
    assert join_tokens(held, {**held, "token": "d"})["token"] == "abcd"
    replaced = join_tokens(held, {**held, "token": "whole", "isSequence": True})
    assert replaced == {**held, "token": "whole", "isSequence": True}
    after_sequence = join_tokens(replaced, {**held, "token": "!"})
    assert after_sequence == {**held, "token": "whole!", "isSequence": True}
    assert join_tokens(held, {**held, "id": "other"}) is None
    assert join_tokens(held, {**held, "isInput": True}) is None


async def test_what_is_held_goes_when_the_window_ends() -> None:
    async with Bus(Settings(stream_coalesce_seconds=0.05)) as bus:
        session_id, received = await session(bus)
        await bus.stream(token(session_id, "a"), join_tokens)
        await bus.stream(token(session_id, "b"), join_tokens)
        await bus.stream(token(session_id, "c"), join_tokens)
        # Nothing else is sent: the window's end sends the held tokens by itself.
        events = await received.count(2)
        assert [e.payload["token"] for e in events] == ["a", "bc"]


async def test_closing_the_bus_sends_what_is_held() -> None:
    settings = Settings(stream_coalesce_seconds=60)
    async with Bus(settings) as listener:  # the memory bus is shared by the buses of one process
        session_id, received = await session(listener)
        async with Bus(settings) as sender:
            await sender.stream(token(session_id, "a"), join_tokens)
            await sender.stream(token(session_id, "b"), join_tokens)
        assert [e.payload["token"] for e in await received.count(2)] == ["a", "b"]


async def test_without_a_window_every_token_goes_alone() -> None:
    async with Bus(Settings(stream_coalesce_seconds=0)) as bus:
        session_id, received = await session(bus)
        for text in "abc":  # each awaited, with its receipt
            receipt = await bus.stream(token(session_id, text), join_tokens)
            assert receipt is not None and receipt.status == "delivered"
        assert [e.payload["token"] for e in await received.count(3)] == ["a", "b", "c"]


async def test_two_messages_streamed_at_once_to_one_session_lose_no_token() -> None:
    """A token of another message waits for what is held to go; a token held meanwhile (by another
    sender) is sent before it, not overwritten."""
    sent: list[tuple[str, str]] = []
    on_its_way = asyncio.Event()

    async def send(envelope: Envelope) -> None:
        on_its_way.set()
        await asyncio.sleep(0.01)  # a bus round trip
        sent.append((envelope.payload["id"], envelope.payload["token"]))

    coalescer = Coalescer(send, 60)  # a long window: only arrivals and flushes send
    session_id = secrets.token_urlsafe(18)
    await coalescer.add(token(session_id, "1", "A"), join_tokens)  # on its way
    await coalescer.add(token(session_id, "2", "A"), join_tokens)  # held
    other = asyncio.create_task(coalescer.add(token(session_id, "x", "B"), join_tokens))
    await asyncio.sleep(0)  # B waits for the held A to go
    await coalescer.add(token(session_id, "3", "A"), join_tokens)  # joins the held A
    on_its_way.clear()
    await on_its_way.wait()  # "1" arrived; the flush sends "23"
    await coalescer.add(token(session_id, "4", "A"), join_tokens)  # held while B still waits
    await other
    await coalescer.close()
    assert "".join(text for message, text in sent if message == "A") == "1234"
    assert [text for message, text in sent if message == "B"] == ["x"]
