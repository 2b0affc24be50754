"""Offsets and the replay seam, by direct calls: the offset helpers of bus/envelope.py, and the chat
server's de-duplication between replay and live delivery (web/server.py) on the in-memory bus.

Fast enough for `make mutate`. The socket side is the server's own `emit`, recorded: these tests check
what the server decides to emit, in which order, not Socket.IO itself (the replica tests do that).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus import Envelope, EnvelopeError, Settings, Target, offset_key, valid_offset
from bus.envelope import frame, unframe
from tests.harness import Process, free_port
from web.server import ChatServer
from web.session import LocalSession

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
        ("1" * 20 + "-" + "9" * 20, True),
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


@given(st.integers(0, 10**20 - 1), st.integers(0, 10**20 - 1), st.binary(max_size=64))
def test_frame_round_trips(n: int, m: int, data: bytes) -> None:
    assert unframe(frame(f"{n}-{m}", data)) == (f"{n}-{m}", data)
    assert unframe(frame("", data)) == ("", data)


@pytest.mark.parametrize(
    "raw", [b"", b"1-0", b"no-space-here", b"abc \x90", b"1-0-0 \x90", b"-1 \x90", b"1x0 \x90"]
)
def test_unframe_refuses_what_is_no_frame(raw: bytes) -> None:
    with pytest.raises(EnvelopeError, match="not a bus frame"):
        unframe(raw)


def test_unframe_splits_at_the_first_space_only() -> None:
    assert unframe(b"3-0 a b ") == ("3-0", b"a b ")
    assert unframe(b" ") == ("", b"")


# -- the replay seam in web/server.py --------------------------------------------------------------


class Recorder:
    """Stands in for `sio.emit` on a server that has no sockets: what would go out, in order."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, dict[str, Any]]] = []
        self.callbacks: list[Any] = []

    async def __call__(self, event: str, data: Any = None, to: str | None = None, **kwargs: Any) -> None:
        assert to == "sid-1", f"{event} emitted to {to!r}, not to the session's socket"
        self.emitted.append((event, data))
        self.callbacks.append(kwargs.get("callback"))

    def offsets(self) -> list[str]:
        return [data["offset"] for _, data in self.emitted if isinstance(data, dict) and "offset" in data]

    def names(self) -> list[str]:
        return [event for event, _ in self.emitted]


@pytest.fixture
def make_server() -> Callable[..., Any]:
    def make(**overrides: Any) -> ChatServer:
        # The memory bus is process-wide: a prefix of its own keeps each test's session apart.
        prefix = f"seam{uuid.uuid4().hex[:8]}"
        base = {"replica_id": "seam", "key_prefix": prefix, "session_log_length": 5, "replay_batch": 2}
        settings = Settings(**{**base, **overrides})
        return ChatServer(settings)

    return make


@pytest.fixture
async def server(make_server: Callable[..., ChatServer]) -> AsyncIterator[tuple[ChatServer, Recorder]]:
    async with make_server() as chat:
        recorder = Recorder()
        chat.sio.emit = recorder  # type: ignore[method-assign]
        yield chat, recorder


def message(n: int) -> Envelope:
    return Envelope(Target.session(SESSION), "new_message", {"output": f"n={n}"}, "test")


async def hold(chat: ChatServer, *, last_offset: str = "0-0") -> LocalSession:
    """The session held by this server, not subscribed: the tests hand it live envelopes themselves
    (through `_deliver`), so nothing arrives behind their back."""
    await chat.bus.registry.create(SESSION, user=None, thread_id=None, resume_token="tok")
    local = LocalSession(SESSION, "sid-1", None, None, last_offset=last_offset)
    chat._sessions[SESSION], chat._by_sid[local.sid] = local, local
    return local


async def send(chat: ChatServer, *numbers: int) -> list[str]:
    """Log and publish (to nobody) one message per number; their offsets."""
    return [(await chat.bus.send(message(n))).offset for n in numbers]


async def test_emit_drops_durable_duplicates_and_advances_the_offset(
    server: tuple[ChatServer, Recorder],
) -> None:
    chat, recorder = server
    local = await hold(chat)
    assert await chat._emit(local, message(1), "1-0") is True
    assert await chat._emit(local, message(1), "1-0") is False  # the same offset again
    assert await chat._emit(local, message(0), "0-5") is False  # older
    assert await chat._emit(local, message(2), "2-0") is True
    assert await chat._emit(local, message(9), "10-0") is True  # 10 > 2 as integers
    assert await chat._emit(local, message(3), "9-0") is False
    assert local.last_offset == "10-0"
    assert recorder.offsets() == ["1-0", "2-0", "10-0"]
    # Unlogged envelopes (no offset) always go out, unchanged and without an offset.
    assert await chat._emit(local, message(4), "") is False
    assert recorder.emitted[-1] == ("new_message", {"output": "n=4"})
    assert local.last_offset == "10-0"


async def test_the_offset_overwrites_a_payload_key_of_that_name(server: tuple[ChatServer, Recorder]) -> None:
    chat, recorder = server
    local = await hold(chat)
    sneaky = Envelope(Target.session(SESSION), "new_message", {"output": "x", "offset": "999-0"}, "t")
    await chat._emit(local, sneaky, "1-0")
    assert recorder.emitted == [("new_message", {"output": "x", "offset": "1-0"})]


async def test_catch_up_replays_the_log_then_the_held_live_envelopes_without_duplicates(
    server: tuple[ChatServer, Recorder],
) -> None:
    chat, recorder = server
    local = await hold(chat, last_offset="1-0")
    assert await send(chat, 1, 2, 3, 4, 5) == ["1-0", "2-0", "3-0", "4-0", "5-0"]
    # A replay is running: live envelopes wait, some also in the log (the seam), one newer than it.
    local.pending, local.replaying = [], True
    for number, offset in [(3, "3-0"), (5, "5-0")]:
        await chat._deliver(message(number), offset)
    assert await send(chat, 6) == ["6-0"]
    await chat._deliver(message(6), "6-0")
    await chat._deliver(message(7), "")  # unlogged: goes out once the replay is done, as it is
    assert len(local.pending) == 4 and recorder.emitted == []
    replayed = await chat._catch_up(local)
    assert recorder.offsets() == ["2-0", "3-0", "4-0", "5-0", "6-0"]  # in order, each once
    assert recorder.emitted[-1] == ("new_message", {"output": "n=7"})
    assert len(recorder.emitted) == 6  # the held duplicates (3-0, 5-0, 6-0) were dropped, not re-sent
    assert replayed == 5  # read from the log in batches of 2: 2-3, 4-5, 6
    assert local.pending is None and local.replaying is False and local.last_offset == "6-0"
    # Live again: the next envelope goes straight out.
    await chat._deliver(message(8), "7-0")
    assert recorder.offsets()[-1] == "7-0"


async def test_a_replay_reads_again_when_a_gap_opened_meanwhile(server: tuple[ChatServer, Recorder]) -> None:
    chat, recorder = server
    local = await hold(chat)
    await send(chat, 0, 1, 2)
    local.pending, local.replaying = [], True
    chat._start_replay(local)  # a second catch-up while one runs: it only asks for one more read
    assert local.replay_again is True
    assert await chat._catch_up(local) == 3
    assert local.replay_again is False and recorder.offsets() == ["1-0", "2-0", "3-0"]


async def test_a_resume_replay_reports_truncation_before_the_first_replayed_event(
    server: tuple[ChatServer, Recorder],
) -> None:
    chat, recorder = server
    local = await hold(chat)
    await send(chat, *range(12))  # the memory bus trims to exactly 5: 8-0 .. 12-0 are left
    local.last_offset, local.pending, local.replaying = "2-0", [], True
    await chat._replay(local, resumed=True)
    assert recorder.names()[0] == "replay_truncated"
    assert recorder.emitted[0][1] == {"requestedOffset": "2-0", "firstOffset": "8-0"}
    assert recorder.offsets() == ["8-0", "9-0", "10-0", "11-0", "12-0"]
    assert recorder.emitted[-1] == ("replayed", {"count": 5})


async def test_a_resume_replay_from_inside_the_log_is_not_truncated(
    server: tuple[ChatServer, Recorder],
) -> None:
    chat, recorder = server
    local = await hold(chat)
    await send(chat, *range(12))
    local.last_offset, local.pending, local.replaying = "7-0", [], True  # 8-0 is the first kept
    await chat._replay(local, resumed=True)
    assert "replay_truncated" not in recorder.names()
    assert recorder.offsets() == ["8-0", "9-0", "10-0", "11-0", "12-0"]
    assert recorder.emitted[-1] == ("replayed", {"count": 5})


async def test_a_catch_up_after_a_lost_subscription_is_silent(server: tuple[ChatServer, Recorder]) -> None:
    chat, recorder = server
    local = await hold(chat, last_offset="1-0")
    await send(chat, *range(12))  # trimmed to 8-0 .. 12-0: a resume would be told, a catch-up is not
    local.pending, local.replaying = [], True
    await chat._replay(local, resumed=False)
    assert recorder.names() == ["new_message"] * 5  # no replay_truncated, no replayed
    assert recorder.offsets() == ["8-0", "9-0", "10-0", "11-0", "12-0"]


async def test_ack_records_only_offsets_that_were_sent_and_only_upwards(
    server: tuple[ChatServer, Recorder],
) -> None:
    chat, _ = server
    local = await hold(chat)
    for number, offset in enumerate(await send(chat, 0, 1, 2, 3)):
        await chat._emit(local, message(number), offset)
    assert local.last_offset == "4-0"
    assert await chat._on_ack("sid-1", {"offset": "3-0"}) is True and local.acked == "3-0"
    assert await chat._on_ack("sid-1", {"offset": "4-0"}) is True and local.acked == "4-0"
    assert await chat._on_ack("sid-1", {"offset": "2-0"}) is True and local.acked == "4-0"  # never down
    assert await chat._on_ack("sid-1", {"offset": "5-0"}) is False and local.acked == "4-0"
    assert await chat._on_ack("sid-1", {"offset": "x"}) is False
    assert await chat._on_ack("sid-1", {}) is False
    assert await chat._on_ack("sid-1", "4-0") is False
    assert await chat._on_ack("other-sid", {"offset": "1-0"}) is False
    await asyncio.sleep(0)  # the coalesced save is a task of its own: let it run
    await asyncio.sleep(0)
    record = await chat.bus.registry.get(SESSION)
    assert record is not None and record.acked == "4-0"


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


async def test_a_resume_replay_waits_for_redis_and_then_delivers_everything(
    make_server: Callable[..., ChatServer], tmp_path: Path
) -> None:
    port = free_port()
    redis_proc = persistent_redis(tmp_path, port)
    # Three failed attempts: the replay keeps retrying (with its growing backoff), it does not give up.
    watcher = Warnings(f"replay for session {SESSION} waits for Redis", 3)
    logging.getLogger("switchboard.web").addHandler(watcher)
    try:
        async with make_server(redis_url=f"redis://127.0.0.1:{port}/0") as chat:
            recorder = Recorder()
            chat.sio.emit = recorder  # type: ignore[method-assign]
            await chat.bus.registry.create(SESSION, user=None, thread_id=None, resume_token="tok")
            for n in range(3):
                await chat.bus.send(message(n))  # queued: nobody holds the session yet
            local = LocalSession(SESSION, "sid-1", None, None, last_offset="0-0")
            local.pending, local.replaying = [], True
            chat._sessions[SESSION] = local
            redis_proc.stop()  # Redis goes away just before the replay starts
            replay = asyncio.create_task(chat._replay(local, resumed=True))
            await asyncio.wait_for(watcher.seen.wait(), 60)  # it is waiting, not giving up
            assert not replay.done() and recorder.emitted == []
            redis_proc = persistent_redis(tmp_path, port)  # back, with the same data
            await asyncio.wait_for(replay, 60)
            assert recorder.offsets() == ["1-0", "2-0", "3-0"]
            assert recorder.emitted[-1] == ("replayed", {"count": 3})
    finally:
        logging.getLogger("switchboard.web").removeHandler(watcher)
        redis_proc.stop()


async def test_a_catch_up_is_started_for_a_live_session_and_goes_live_again(
    server: tuple[ChatServer, Recorder],
) -> None:
    chat, recorder = server
    local = await hold(chat, last_offset="1-0")
    await send(chat, 0, 1, 2)
    chat._start_replay(local)  # what the restored subscription does for every session here
    assert local.replaying is True and local.pending == []
    await chat._deliver(message(9), "")  # arrives while it runs: held until the end
    await asyncio.gather(*chat._background)
    assert recorder.names() == ["new_message"] * 3  # silent: no replay_truncated, no replayed
    assert recorder.offsets() == ["2-0", "3-0"] and recorder.emitted[-1][1] == {"output": "n=9"}
    assert local.pending is None and local.replaying is False


async def test_a_question_is_asked_on_the_socket_and_counts_as_no_durable_event(
    server: tuple[ChatServer, Recorder],
) -> None:
    chat, recorder = server
    local = await hold(chat)
    ask = {
        "msg": {"output": "Name?"},
        "spec": {"type": "text"},
        "correlationId": "c1",
        "deadline": time.time() + 30,
    }
    envelope = Envelope(Target.session(SESSION), "ask", ask, "test")
    assert await chat._emit(local, envelope, "") is False
    ((event, data),) = recorder.emitted
    assert event == "ask" and data["msg"] == {"output": "Name?"} and 29 < data["spec"]["timeout"] <= 30
    assert callable(recorder.callbacks[0]) and local.asked == {"c1"}
    assert await chat._emit(local, envelope, "") is False and len(recorder.emitted) == 1  # once per socket


async def test_a_replay_moves_past_an_undecodable_last_entry(server: tuple[ChatServer, Recorder]) -> None:
    chat, recorder = server
    local = await hold(chat, last_offset="8-0")
    await send(chat, *range(9))
    registry = chat.bus.registry
    garbage = await chat.bus.backend.send(
        registry.key(SESSION),
        registry.log_key(SESSION),
        "nowhere",
        b"\xc1garbage",
        message_id="g",
        durable=True,
        maxlen=5,
        ttl=60,
    )
    assert garbage is not None and garbage[0] == "10-0"
    local.pending, local.replaying = [], True
    assert await chat._catch_up(local) == 1  # 9-0; 10-0 is skipped and counted
    assert recorder.offsets() == ["9-0"] and chat.bus.stats.malformed == 1
    assert local.last_offset == "10-0"  # past it, compared as integers ("10-0" < "9-0" as text)
