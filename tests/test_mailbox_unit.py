"""The mailbox of one held session, on the in-memory bus: offsets, the replay seam, truncation."""

import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bus import Bus, BusUnavailable, Envelope, Settings, Target
from bus.core import BusObserver
from web import mailbox as mailbox_module
from web.mailbox import MAX_PENDING, Mailbox
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


class Observed(BusObserver):
    """What the mailbox reports to the metrics: each envelope's outcome, and each resume's count."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str]] = []
        self.replays: list[tuple[int, bool]] = []

    def delivered(self, envelope: Envelope, outcome: str) -> None:
        self.outcomes.append((envelope.id, outcome))

    def replayed(self, count: int, truncated: bool) -> None:
        self.replays.append((count, truncated))


def observed(bus: Bus) -> Observed:
    bus.observer = observer = Observed()
    return observer


def note(n: int) -> Envelope:
    """An ephemeral envelope (a token, an activity marker): never logged, no offset."""
    return Envelope(Target("user", "u"), "note", {"n": n}, "test")


async def test_a_new_mailbox_is_live_and_holds_nothing(bus: Bus) -> None:
    box = mailbox(bus, await new_session(bus), Socket())
    assert box.pending is None and box.replaying is False and box.replay_again is False
    assert (box.last_offset, box.acked, box.epoch, box.open) == ("0-0", "0-0", None, True)


async def test_each_envelope_is_reported_emitted_or_duplicate(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    watch, box = observed(bus), mailbox(bus, session_id, socket)
    first, second = await send(bus, session_id, 2)
    epoch = await epoch_of(bus, session_id)
    live = note(1)
    await box.deliver(first, "1-0", epoch)
    await box.deliver(first, "1-0", epoch)
    await box.deliver(live, "", "")
    await box.deliver(second, "2-0", epoch)
    await box.deliver(Envelope(Target.session(session_id), ASK, {"correlationId": "c"}, "t"), "", "")
    assert watch.outcomes == [
        (first.id, "emitted"),
        (first.id, "duplicate"),
        (live.id, "emitted"),
        (second.id, "emitted"),
    ]  # a question is shown, not counted as an emit


async def test_a_resume_reports_its_count_and_whether_it_was_truncated(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    watch = observed(bus)
    await send(bus, session_id, 12)  # the log keeps 5: 8-0 .. 12-0
    box = mailbox(bus, session_id, socket)
    box.hold("0-0")
    assert await box.replay(resumed=True) == 5
    box.hold("11-0")
    assert await box.replay(resumed=True) == 1
    replay = box.restore()  # a catch-up after a lost subscription reports nothing
    assert replay is not None and await replay == 0
    assert watch.replays == [(5, True), (1, False)]


async def test_questions_in_the_log_are_shown_and_not_counted_as_replayed(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    await send(bus, session_id, 1)
    await bus.send(Envelope(Target.session(session_id), ASK, {"correlationId": "c"}, "t"))
    await send(bus, session_id, 1)
    box = mailbox(bus, session_id, socket)
    box.hold("0-0")
    assert await box.replay(resumed=True) == 2
    assert socket.asks == [{"correlationId": "c"}] and socket.events[-1] == ("replayed", {"count": 2})


async def test_a_held_mailbox_runs_one_replay_a_restore_asks_it_to_read_again(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    box = mailbox(bus, session_id, socket)
    box.hold("0-0")
    assert box.replaying is True and box.pending == []
    assert box.restore() is None and box.replay_again is True  # the resume's replay reads once more


async def test_a_claimed_offset_beyond_the_log_is_not_believed(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    await send(bus, session_id, 3)
    box = mailbox(bus, session_id, socket)
    box.hold("99-0")  # the client says it has 99 messages; the log has 3
    assert await box.replay(resumed=True) == 0
    assert box.last_offset == "3-0" and socket.events == [("replayed", {"count": 0})]
    (fourth,) = await send(bus, session_id, 1)
    await box.deliver(fourth, "4-0", await epoch_of(bus, session_id))
    assert socket.offsets() == ["4-0"]  # delivered, not taken for a duplicate of 99


# -- the bound on what waits during a replay -------------------------------------------------------


async def test_pending_holds_at_most_max_pending_then_drops_ephemerals_and_rereads_the_log(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    socket, session_id = Socket(), await new_session(bus)
    box = mailbox(bus, session_id, socket)
    epoch = await epoch_of(bus, session_id)
    box.hold("0-0", epoch)
    for n in range(MAX_PENDING):
        await box.deliver(note(n), "", "")
    assert box.pending is not None and len(box.pending) == MAX_PENDING
    with caplog.at_level(logging.WARNING, logger="switchboard.web"):
        await box.deliver(note(MAX_PENDING), "", "")  # one more: dropped, and said so
    assert len(box.pending) == MAX_PENDING
    assert [r.getMessage() for r in caplog.records] == [
        f"session {session_id}: dropped an ephemeral note during a long replay"
    ]
    read_log, reads = bus.read_log, 0
    late: list[Envelope] = []

    async def and_meanwhile(session: str, after: str) -> Any:
        """After the replay's first read, a durable message arrives live while pending is full."""
        nonlocal reads
        reads += 1
        batch = await read_log(session, after)
        if reads == 1:
            late.extend(await send(bus, session_id, 1))
            await box.deliver(late[0], "1-0", epoch)  # not held: the log has it
        return batch

    bus.read_log = and_meanwhile  # type: ignore[method-assign]
    await box.replay(resumed=True)
    notes = [p["n"] for e, p in socket.events if e == "note"]
    assert notes == list(range(MAX_PENDING))  # the held ones, in order; the dropped one never
    assert socket.offsets() == ["1-0"] and reads >= 2  # the log was read again for it
    assert socket.events[-1] == ("replayed", {"count": 1})
    assert box.pending is None and box.replaying is False and box.replay_again is False


# -- a replay that fails ---------------------------------------------------------------------------


async def test_a_replay_that_fails_delivers_what_it_held_and_goes_live(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    socket, session_id = Socket(), await new_session(bus)
    held_durable, later = await send(bus, session_id, 2)
    epoch = await epoch_of(bus, session_id)
    box = mailbox(bus, session_id, socket)
    box.hold("0-0", epoch)
    await box.deliver(held_durable, "1-0", epoch)
    await box.deliver(note(7), "", "")

    async def broken(session: str, after: str) -> Any:
        raise RuntimeError("a reply the client library did not expect")

    bus.read_log = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="switchboard.web"):
        assert await box.replay(resumed=True) == 0
    (record,) = caplog.records
    assert record.getMessage() == f"replay for session {session_id} failed; delivering live from now on"
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert socket.events == [
        ("new_message", {"n": 0, "offset": "1-0", "epoch": epoch}),
        ("note", {"n": 7}),
        ("replayed", {"count": 0}),
    ]
    assert box.pending is None and box.replaying is False and box.replay_again is False
    await box.deliver(later, "2-0", epoch)  # live from now on
    assert socket.offsets() == ["1-0", "2-0"]
    replay = box.restore()  # and a later catch-up may run again
    assert replay is not None
    replay.close()


class Sleeps:
    """Stands in for the `asyncio` module of web/mailbox.py: records the backoff, waits not at all."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


async def test_a_replay_waiting_for_the_bus_backs_off_doubling_to_two_seconds(
    bus: Bus, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    socket, session_id = Socket(), await new_session(bus)
    await send(bus, session_id, 12)  # trimmed: the resume is told once, however often it retries
    sleeps = Sleeps()
    monkeypatch.setattr(mailbox_module, "asyncio", sleeps)
    read_log, failures = bus.read_log, 8

    async def away(session: str, after: str) -> Any:
        nonlocal failures
        if failures:
            failures -= 1
            raise BusUnavailable("Redis is away")
        return await read_log(session, after)

    bus.read_log = away  # type: ignore[method-assign]
    box = mailbox(bus, session_id, socket)
    box.hold("0-0")
    with caplog.at_level(logging.WARNING, logger="switchboard.web"):
        assert await box.replay(resumed=True) == 5
    assert sleeps.waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert [r.getMessage() for r in caplog.records] == [
        f"replay for session {session_id} waits for the bus: Redis is away"
    ] * 8
    assert [e for e, _ in socket.events].count("replay_truncated") == 1
    assert socket.offsets() == ["8-0", "9-0", "10-0", "11-0", "12-0"]


async def test_a_lost_log_is_logged_with_its_new_epoch(bus: Bus, caplog: pytest.LogCaptureFixture) -> None:
    socket, session_id = Socket(), await new_session(bus)
    (first,) = await send(bus, session_id, 1)
    box = mailbox(bus, session_id, socket)
    await box.deliver(first, "1-0", await epoch_of(bus, session_id))
    with caplog.at_level(logging.WARNING, logger="switchboard.web"):
        await box.deliver(first, "1-0", "beef0002")
    assert [r.getMessage() for r in caplog.records] == [
        f"session {session_id}: its log was lost and started again (epoch beef0002)"
    ]


async def test_a_resume_that_fails_before_its_bounds_check_is_not_reported_truncated(bus: Bus) -> None:
    socket, session_id = Socket(), await new_session(bus)
    watch = observed(bus)

    async def broken(session: str) -> Any:
        raise RuntimeError("a reply the client library did not expect")

    bus.log_bounds = broken  # type: ignore[method-assign]
    box = mailbox(bus, session_id, socket)
    box.hold("0-0")
    assert await box.replay(resumed=True) == 0
    assert watch.replays == [(0, False)] and socket.events == [("replayed", {"count": 0})]


async def test_a_replay_interrupted_midway_counts_everything_it_replayed(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away after the first batch was emitted: the retry goes on from there, and
    `replayed` counts every message the resume got from the log, before and after the wait."""
    socket, session_id = Socket(), await new_session(bus)
    watch = observed(bus)
    await send(bus, session_id, 5)
    monkeypatch.setattr(mailbox_module, "asyncio", Sleeps())
    read_log, reads = bus.read_log, 0

    async def away_once(session: str, after: str) -> Any:
        nonlocal reads
        reads += 1
        if reads == 2:  # batches of 2: 1-0 and 2-0 went out, then the bus is away once
            raise BusUnavailable("Redis is away")
        return await read_log(session, after)

    bus.read_log = away_once  # type: ignore[method-assign]
    box = mailbox(bus, session_id, socket)
    box.hold("0-0")
    assert await box.replay(resumed=True) == 5
    assert socket.offsets() == ["1-0", "2-0", "3-0", "4-0", "5-0"]
    assert socket.events[-1] == ("replayed", {"count": 5}) and watch.replays == [(5, False)]
