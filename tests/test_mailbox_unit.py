"""The mailbox of one held session, on the in-memory bus: offsets, the replay seam, truncation."""

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bus import Bus, BusUnavailable, Envelope, Settings, Target
from web.mailbox import Mailbox
from web.protocol import ASK


class Socket:
    """What the mailbox emitted, in order, and the questions it showed."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.asks: list[dict[str, Any]] = []

    async def emit(self, event: str, payload: dict[str, Any]) -> None:
        self.events.append((event, payload))

    async def show(self, ask: dict[str, Any]) -> None:
        self.asks.append(ask)

    def offsets(self) -> list[str]:
        return [p["offset"] for e, p in self.events if "offset" in p]


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    async with Bus(Settings(session_log_length=5, replay_batch=2)) as bus:
        yield bus


async def new_session(bus: Bus) -> str:
    session_id = secrets.token_urlsafe(18)
    await bus.registry.create(session_id, user=None, thread_id=None, resume_token="t")
    return session_id


async def epoch_of(bus: Bus, session_id: str) -> str:
    return (await bus.log_bounds(session_id))[2]


async def send(bus: Bus, session_id: str, n: int) -> list[Envelope]:
    sent = []
    for i in range(n):
        envelope = Envelope(Target.session(session_id), "new_message", {"n": i}, "test")
        await bus.send(envelope)
        sent.append(envelope)
    return sent


def mailbox(bus: Bus, session_id: str, socket: Socket) -> Mailbox:
    return Mailbox(session_id, bus, socket.emit, socket.show)


async def test_live_durable_envelopes_go_out_once_in_offset_order(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    box = mailbox(bus, session_id, socket)
    first, second = await send(bus, session_id, 2)
    await box.deliver(first, "1-0", await epoch_of(bus, session_id))
    await box.deliver(first, "1-0", await epoch_of(bus, session_id))  # a duplicate (e.g. replayed and live)
    await box.deliver(second, "2-0", await epoch_of(bus, session_id))
    epoch = await epoch_of(bus, session_id)
    assert socket.events == [
        ("new_message", {"n": 0, "offset": "1-0", "epoch": epoch}),
        ("new_message", {"n": 1, "offset": "2-0", "epoch": epoch}),
    ]
    assert box.last_offset == "2-0"


async def test_live_envelopes_wait_during_a_resume_replay_and_the_seam_drops_duplicates(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    sent = await send(bus, session_id, 4)
    box = mailbox(bus, session_id, socket)
    box.hold("1-0")  # the client has offset 1
    await box.deliver(
        sent[3], "4-0", await epoch_of(bus, session_id)
    )  # arrives live while the log is replayed: held
    await box.deliver(Envelope(Target("user", "u"), "note", {"live": True}, "test"), "", "")
    assert socket.events == []
    count = await box.replay(resumed=True)
    assert count == 3
    assert socket.offsets() == ["2-0", "3-0", "4-0"]  # 4 replayed and not emitted again live
    assert socket.events[3] == ("note", {"live": True})
    assert socket.events[-1] == ("replayed", {"count": 3})
    assert box.pending is None and not box.replaying
    # Live again: the next envelope goes straight out.
    (fifth,) = await send(bus, session_id, 1)
    await box.deliver(fifth, "5-0", await epoch_of(bus, session_id))
    assert socket.offsets()[-1] == "5-0"


async def test_a_trimmed_log_is_reported_before_the_first_replayed_event(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    await send(bus, session_id, 12)  # the log keeps about 5
    box = mailbox(bus, session_id, socket)
    box.hold("0-0")
    await box.replay(resumed=True)
    event, payload = socket.events[0]
    assert event == "replay_truncated" and payload["requestedOffset"] == "0-0"
    first_kept = socket.offsets()[0]
    assert payload["firstOffset"] == first_kept and first_kept != "1-0"
    assert socket.offsets()[-1] == "12-0"


async def test_nothing_is_reported_truncated_when_the_client_has_everything_missing(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    await send(bus, session_id, 12)
    box = mailbox(bus, session_id, socket)
    box.hold("11-0")
    await box.replay(resumed=True)
    assert [e for e, _ in socket.events] == ["new_message", "replayed"]
    assert socket.offsets() == ["12-0"]


async def test_a_restore_during_a_replay_reads_the_log_once_more(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    await send(bus, session_id, 1)
    box = mailbox(bus, session_id, socket)
    replay = box.restore()
    assert replay is not None and box.replaying
    assert box.restore() is None and box.replay_again  # one replay at a time; it goes round again
    await send(bus, session_id, 1)  # published while "the subscription was lost": only in the log
    await replay
    assert socket.offsets() == ["1-0", "2-0"] and not box.replaying and not box.replay_again
    assert not [e for e, _ in socket.events if e == "replayed"]  # only a resume reports a count


async def test_replay_waits_for_the_bus_and_stops_when_the_session_leaves(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    await send(bus, session_id, 2)
    box = mailbox(bus, session_id, socket)
    calls = 0
    read_log = bus.read_log

    async def flaky(session: str, after: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BusUnavailable("Redis is away")
        return await read_log(session, after)

    bus.read_log = flaky  # type: ignore[method-assign]
    box.hold("0-0")
    await box.replay(resumed=True)
    assert calls >= 2 and socket.offsets() == ["1-0", "2-0"]
    box.open = False
    socket.events.clear()
    box.hold("0-0")
    assert await box.replay(resumed=True) == 0 and socket.events == []


async def test_acks_only_up_to_what_was_sent(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    (envelope,) = await send(bus, session_id, 1)
    box = mailbox(bus, session_id, socket)
    assert not box.ack("1-0")  # never sent to this socket
    await box.deliver(envelope, "1-0", await epoch_of(bus, session_id))
    assert box.ack("1-0") and box.acked == "1-0"
    assert box.ack("0-0") and box.acked == "1-0"  # an older ack does not move it back
    assert not box.ack("2-0")


async def test_questions_are_shown_not_emitted(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    box = mailbox(bus, session_id, socket)
    ask = Envelope(Target.session(session_id), ASK, {"correlationId": "c"}, "test")
    await box.deliver(ask, "", "")
    assert socket.asks == [{"correlationId": "c"}] and socket.events == []
