"""Offsets and the replay seam, by direct calls: the offset helpers of bus/envelope.py, and a held
session's de-duplication between replay and live delivery (web/mailbox.py) on the in-memory bus.

Fast enough for `make mutate`. The socket side is a recorded `emit`: these tests check what the mailbox
decides to emit, in which order, not Socket.IO itself (the replica tests do that).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus import Envelope, EnvelopeError, Settings, Target, offset_key, valid_offset
from bus.core import Bus
from bus.envelope import frame, unframe
from tests.harness import Process, free_port
from web.ask import AskRelay
from web.mailbox import Mailbox

SESSION = "R" * 24

# -- the offset helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "key"),
    [("0-0", (0, 0)), ("1-0", (1, 0)), ("10-0", (10, 0)), ("9-15", (9, 15)), ("7", (7, 0)), ("7-", (7, 0))],
)
def test_offset_key_reads_two_integers(offset: str, key: tuple[int, int]) -> None:
    assert offset_key(offset) == key


def test_offsets_compare_as_integers_not_strings() -> None:
    offsets = ["10-0", "9-0", "2-1", "2-0", "100-0"]
    assert sorted(offsets, key=offset_key) == ["2-0", "2-1", "9-0", "10-0", "100-0"]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("0-0", True),
        ("41-0", True),
        ("1" * 20 + "-" + "9" * 20, False),  # both parts must fit in 64 bits, as Redis stream ids do
        (f"{2**64 - 1}-{2**64 - 1}", True),
        (f"{2**64}-0", False),
        (f"0-{2**64}", False),
        (f"0-{2**64 - 1}", True),
        ("1" * 21 + "-0", False),
        ("1-" + "0" * 21, False),
        ("", False),
        ("1", False),
        ("1-", False),
        ("-1", False),
        ("a-0", False),
        ("1-0 ", False),
        (" 1-0", False),
        ("1-0-0", False),
        ("\uff11-0", False),  # a full-width 1: str.isdigit() says yes, the pattern says no
        (41, False),
        (None, False),
        (b"1-0", False),
    ],
)
def test_valid_offset(value: object, valid: bool) -> None:
    assert valid_offset(value) is valid


@given(
    st.integers(0, 10**20 - 1),
    st.integers(0, 10**20 - 1),
    st.text("0123456789abcdef", min_size=1, max_size=32),
    st.binary(max_size=64),
)
def test_frame_round_trips(n: int, m: int, epoch: str, data: bytes) -> None:
    assert unframe(frame(f"{n}-{m}", epoch, data)) == (f"{n}-{m}", epoch, data)
    assert unframe(frame("", "", data)) == ("", "", data)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"1-0",
        b"no-space-here",
        b"abc \x90",
        b"1-0-0 \x90",
        b"-1 \x90",
        b"1x0 \x90",
        b"1-0 \x90",
        b"1-0: \x90",
        b"1-0:XYZ \x90",
        b":ab \x90",
    ],
)
def test_unframe_refuses_what_is_no_frame(raw: bytes) -> None:
    with pytest.raises(EnvelopeError) as raised:
        unframe(raw)
    assert str(raised.value) == "not a bus frame (position, space, envelope)"


def test_unframe_splits_at_the_first_space_only() -> None:
    assert unframe(b"3-0:ab12 a b ") == ("3-0", "ab12", b"a b ")
    assert unframe(b" ") == ("", "", b"")


# -- the replay seam in web/mailbox.py -------------------------------------------------------------


class Recorder:
    """Stands in for the session's socket: what would go out, in order, and the questions shown."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, dict[str, Any]]] = []
        self.asks: list[dict[str, Any]] = []

    async def emit(self, event: str, data: dict[str, Any]) -> None:
        self.emitted.append((event, data))

    async def show(self, ask: dict[str, Any]) -> None:
        self.asks.append(ask)

    def offsets(self) -> list[str]:
        return [data["offset"] for _, data in self.emitted if isinstance(data, dict) and "offset" in data]

    def names(self) -> list[str]:
        return [event for event, _ in self.emitted]


def settings(**overrides: Any) -> Settings:
    # The memory bus is process-wide: a prefix of its own keeps each test's session apart.
    prefix = f"seam{uuid.uuid4().hex[:8]}"
    base = {"replica_id": "seam", "key_prefix": prefix, "session_log_length": 5, "replay_batch": 2}
    return Settings(**{**base, **overrides})


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    async with Bus(settings()) as bus:
        yield bus


def message(n: int) -> Envelope:
    return Envelope(Target.session(SESSION), "new_message", {"output": f"n={n}"}, "test")


async def hold(bus: Bus, *, last_offset: str = "0-0") -> tuple[Mailbox, Recorder, str]:
    """The mailbox of a session held here, not subscribed: the tests hand it live envelopes
    themselves, so nothing arrives behind their back. Returns it, its socket, and the log's epoch."""
    await bus.registry.create(SESSION, user=None, thread_id=None, resume_token="tok")
    recorder = Recorder()
    box = Mailbox(SESSION, bus, recorder.emit, recorder.show)
    epoch = (await bus.log_bounds(SESSION))[2]
    box.last_offset, box.epoch = last_offset, epoch
    return box, recorder, epoch


async def send(bus: Bus, *numbers: int) -> list[str]:
    """Log and publish (to nobody) one message per number; their offsets."""
    return [(await bus.send(message(n))).offset for n in numbers]


async def test_emit_drops_durable_duplicates_and_advances_the_offset(bus: Bus) -> None:
    box, recorder, epoch = await hold(bus)
    assert await box._emit(message(1), "1-0", epoch) is True
    assert await box._emit(message(1), "1-0", epoch) is False  # the same offset again
    assert await box._emit(message(0), "0-5", epoch) is False  # older
    assert await box._emit(message(2), "2-0", epoch) is True
    assert await box._emit(message(9), "10-0", epoch) is True  # 10 > 2 as integers
    assert await box._emit(message(3), "9-0", epoch) is False
    assert box.last_offset == "10-0"
    assert recorder.offsets() == ["1-0", "2-0", "10-0"]
    # Unlogged envelopes (no offset) always go out, unchanged and without an offset.
    assert await box._emit(message(4), "", "") is False
    assert recorder.emitted[-1] == ("new_message", {"output": "n=4"})
    assert box.last_offset == "10-0"


async def test_the_offset_and_epoch_overwrite_payload_keys_of_those_names(bus: Bus) -> None:
    box, recorder, epoch = await hold(bus)
    payload = {"output": "x", "offset": "999-0", "epoch": "forged"}
    await box._emit(Envelope(Target.session(SESSION), "new_message", payload, "t"), "1-0", epoch)
    assert recorder.emitted == [("new_message", {"output": "x", "offset": "1-0", "epoch": epoch})]


async def test_a_new_epoch_starts_the_count_again_and_tells_the_client(bus: Bus) -> None:
    box, recorder, epoch = await hold(bus)
    await box._emit(message(1), "7-0", epoch)
    assert await box._emit(message(2), "1-0", "beef0001") is True  # a new log: 1-0 is new there
    assert recorder.names() == ["new_message", "log_reset", "new_message"]
    assert recorder.emitted[1][1] == {"epoch": "beef0001", "previousEpoch": epoch}
    assert box.epoch == "beef0001" and box.last_offset == "1-0" and box.acked == "0-0"


async def test_catch_up_replays_the_log_then_the_held_live_envelopes_without_duplicates(bus: Bus) -> None:
    box, recorder, epoch = await hold(bus, last_offset="1-0")
    assert await send(bus, 1, 2, 3, 4, 5) == ["1-0", "2-0", "3-0", "4-0", "5-0"]
    # A replay is running: live envelopes wait, some also in the log (the seam), one newer than it.
    box.pending, box.replaying = [], True
    for number, offset in [(3, "3-0"), (5, "5-0")]:
        await box.deliver(message(number), offset, epoch)
    assert await send(bus, 6) == ["6-0"]
    await box.deliver(message(6), "6-0", epoch)
    await box.deliver(message(7), "", "")  # unlogged: goes out once the replay is done, as it is
    assert len(box.pending) == 4 and recorder.emitted == []
    replayed = await box._catch_up()
    assert recorder.offsets() == ["2-0", "3-0", "4-0", "5-0", "6-0"]  # in order, each once
    assert recorder.emitted[-1] == ("new_message", {"output": "n=7"})
    assert len(recorder.emitted) == 6  # the held duplicates (3-0, 5-0, 6-0) were dropped, not re-sent
    assert replayed == 5  # read from the log in batches of 2: 2-3, 4-5, 6
    assert box.pending is None and box.replaying is False and box.last_offset == "6-0"
    # Live again: the next envelope goes straight out.
    await box.deliver(message(8), "7-0", epoch)
    assert recorder.offsets()[-1] == "7-0"


async def test_a_replay_reads_again_when_a_gap_opened_meanwhile(bus: Bus) -> None:
    box, recorder, _ = await hold(bus)
    await send(bus, 0, 1, 2)
    box.pending, box.replaying = [], True
    assert box.restore() is None  # a second catch-up while one runs: it only asks for one more read
    assert box.replay_again is True
    assert await box._catch_up() == 3
    assert box.replay_again is False and recorder.offsets() == ["1-0", "2-0", "3-0"]


async def test_each_catch_up_counts_what_it_emitted_itself(bus: Bus) -> None:
    box, recorder, _ = await hold(bus)
    await send(bus, 0, 1, 2)
    box.pending, box.replaying = [], True
    assert await box._catch_up() == 3
    await send(bus, 3, 4)
    box.pending, box.replaying = [], True
    assert await box._catch_up() == 2  # the second one's own, not the total so far
    assert recorder.offsets() == ["1-0", "2-0", "3-0", "4-0", "5-0"]


async def test_a_resume_replay_reports_truncation_before_the_first_replayed_event(bus: Bus) -> None:
    box, recorder, epoch = await hold(bus)
    await send(bus, *range(12))  # the memory bus trims to exactly 5: 8-0 .. 12-0 are left
    box.hold("2-0", epoch)
    await box.replay(resumed=True)
    assert recorder.names()[0] == "replay_truncated"
    assert recorder.emitted[0][1] == {"requestedOffset": "2-0", "firstOffset": "8-0"}
    assert recorder.offsets() == ["8-0", "9-0", "10-0", "11-0", "12-0"]
    assert recorder.emitted[-1] == ("replayed", {"count": 5})


async def test_a_resume_replay_from_inside_the_log_is_not_truncated(bus: Bus) -> None:
    box, recorder, epoch = await hold(bus)
    await send(bus, *range(12))
    box.hold("7-0", epoch)  # 8-0 is the first kept
    await box.replay(resumed=True)
    assert "replay_truncated" not in recorder.names()
    assert recorder.offsets() == ["8-0", "9-0", "10-0", "11-0", "12-0"]
    assert recorder.emitted[-1] == ("replayed", {"count": 5})


async def test_a_catch_up_after_a_lost_subscription_is_silent(bus: Bus) -> None:
    box, recorder, _ = await hold(bus, last_offset="1-0")
    await send(bus, *range(12))  # trimmed to 8-0 .. 12-0: a resume would be told, a catch-up is not
    replay = box.restore()
    assert replay is not None
    await replay
    assert recorder.names() == ["new_message"] * 5  # no replay_truncated, no replayed
    assert recorder.offsets() == ["8-0", "9-0", "10-0", "11-0", "12-0"]


async def test_ack_records_only_offsets_that_were_sent_and_only_upwards(bus: Bus) -> None:
    box, _, epoch = await hold(bus)
    for number, offset in enumerate(await send(bus, 0, 1, 2, 3)):
        await box._emit(message(number), offset, epoch)
    assert box.last_offset == "4-0"
    assert box.ack("3-0") is True and box.acked == "3-0"
    assert box.ack("4-0") is True and box.acked == "4-0"
    assert box.ack("2-0") is True and box.acked == "4-0"  # never down
    assert box.ack("5-0") is False and box.acked == "4-0"


# -- a replay while Redis is unreachable ----------------------------------------------------------


class Warnings(logging.Handler):
    """Sets `seen` once `count` warnings containing `marker` were logged."""

    def __init__(self, marker: str, count: int) -> None:
        super().__init__(logging.WARNING)
        self.marker, self.count, self.seen = marker, count, asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.marker in record.getMessage():
            self.count -= 1
            if self.count <= 0:
                self.seen.set()


def persistent_redis(directory: Path, port: int) -> Process:
    """Our own redis-server, with an append-only file so a restart keeps the session and its log."""
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(directory)]
    proc = Process(args, name="redis-aof")
    proc.wait_for_line("Ready to accept connections")
    return proc


async def test_a_resume_replay_waits_for_redis_and_then_delivers_everything(tmp_path: Path) -> None:
    port = free_port()
    redis_proc = persistent_redis(tmp_path, port)
    # Three failed attempts: the replay keeps retrying (with its growing backoff), it does not give up.
    watcher = Warnings(f"replay for session {SESSION} waits for the bus", 3)
    logging.getLogger("switchboard.web").addHandler(watcher)
    try:
        async with Bus(settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_seconds=1)) as bus:
            await bus.registry.create(SESSION, user=None, thread_id=None, resume_token="tok")
            for n in range(3):
                await bus.send(message(n))  # queued: nobody holds the session yet
            recorder = Recorder()
            box = Mailbox(SESSION, bus, recorder.emit, recorder.show)
            box.hold("0-0")
            redis_proc.stop()  # Redis goes away just before the replay starts
            replay = asyncio.create_task(box.replay(resumed=True))
            await asyncio.wait_for(watcher.seen.wait(), 60)  # it is waiting, not giving up
            assert not replay.done() and recorder.emitted == []
            redis_proc = persistent_redis(tmp_path, port)  # back, with the same data
            await asyncio.wait_for(replay, 60)
            assert recorder.offsets() == ["1-0", "2-0", "3-0"]
            assert recorder.emitted[-1] == ("replayed", {"count": 3})
    finally:
        logging.getLogger("switchboard.web").removeHandler(watcher)
        redis_proc.stop()


async def test_a_catch_up_is_started_for_a_live_session_and_goes_live_again(bus: Bus) -> None:
    box, recorder, _ = await hold(bus, last_offset="1-0")
    await send(bus, 0, 1, 2)
    replay = box.restore()  # what the restored subscription does for every session here
    assert replay is not None and box.replaying is True and box.pending == []
    await box.deliver(message(9), "", "")  # arrives while it runs: held until the end
    await replay
    assert recorder.names() == ["new_message"] * 3  # silent: no replay_truncated, no replayed
    assert recorder.offsets() == ["2-0", "3-0"] and recorder.emitted[-1][1] == {"output": "n=9"}
    assert box.pending is None and box.replaying is False


async def test_a_question_is_asked_on_the_socket_once(bus: Bus) -> None:
    shown: list[tuple[str, dict[str, Any], str]] = []
    callbacks: list[Any] = []

    async def emit(event: str, data: dict[str, Any], to: str, callback: Any) -> None:
        shown.append((event, data, to))
        callbacks.append(callback)

    relay = AskRelay(bus, emit, asyncio.ensure_future)
    ask = {
        "msg": {"output": "Name?"},
        "spec": {"type": "text"},
        "correlationId": "c1",
        "deadline": time.time() + 30,
    }
    asked: set[str] = set()
    await relay.show("sid-1", asked, ask)
    ((event, data, to),) = shown
    assert event == "ask" and to == "sid-1" and data["msg"] == {"output": "Name?"}
    assert 29 < data["spec"]["timeout"] <= 30 and callable(callbacks[0]) and asked == {"c1"}
    await relay.show("sid-1", asked, ask)
    assert len(shown) == 1  # once per socket
    await relay.show("sid-1", set(), {**ask, "correlationId": "c2", "deadline": time.time() - 1})
    assert len(shown) == 1  # past its deadline: not shown


async def test_a_replay_moves_past_an_undecodable_last_entry(bus: Bus) -> None:
    box, recorder, _ = await hold(bus, last_offset="8-0")
    await send(bus, *range(9))
    garbage = await bus.transport.send(
        bus.keys.session(SESSION),
        bus.keys.session_log(SESSION),
        "nowhere",
        b"\xc1garbage",
        message_id="g",
        durable=True,
        maxlen=5,
        max_bytes=1 << 20,
        max_age=60,
    )
    assert garbage is not None and garbage[0] == "10-0"
    box.pending, box.replaying = [], True
    assert await box._catch_up() == 1  # 9-0; 10-0 is skipped and counted
    assert recorder.offsets() == ["9-0"] and bus.stats.malformed == 1
    assert box.last_offset == "10-0"  # past it, compared as integers ("10-0" < "9-0" as text)
