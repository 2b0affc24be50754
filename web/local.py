"""The sessions this replica holds: their channels, their saved state, the heartbeat that keeps their
records alive, and the grace period that ends them after a disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from bus import Bus, BusUnavailable, Envelope, Target
from bus.registry import Held, valid_session_id
from web.limits import HookQueue, TokenBucket
from web.mailbox import Mailbox
from web.protocol import ASK, CONTROL_PREFIX, TAKEOVER
from web.user import User

log = logging.getLogger("switchboard.web")
_T = TypeVar("_T")


@dataclass(slots=True, eq=False)
class LocalSession:
    """A session whose socket this process holds."""

    id: str
    sid: str
    user: User | None
    thread_id: str | None
    mailbox: Mailbox
    #: The session's hook calls, one at a time; and the socket's event budget.
    hooks: HookQueue
    events: TokenBucket
    data: dict[str, Any] = field(default_factory=dict)
    started: bool = False
    #: Set when a newer connection resumed the session: this socket closes without ending it.
    replaced: bool = False
    #: SHA-256 of the resume token this socket was given (re-registered if Redis loses the record).
    token_hash: str = ""
    #: Correlation ids of the questions shown on this socket.
    asked: set[str] = field(default_factory=set)


class LocalSessions:
    """The table of held sessions, by id, by socket and by user, and their life on this replica."""

    def __init__(self, bus: Bus, replaced: Callable[[LocalSession], Awaitable[None]]) -> None:
        self._bus = bus
        #: Closes the socket of a session that another replica took over.
        self._replaced = replaced
        self.by_id: dict[str, LocalSession] = {}
        self.by_sid: dict[str, LocalSession] = {}
        #: Local session ids per user: a user's channel is subscribed while this is non-empty.
        self._by_user: dict[str, set[str]] = {}
        self._endings: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        #: Handshakes under way per session id they resume; set when each one ends.
        self._handshakes: dict[str, asyncio.Event] = {}

    async def start(self) -> None:
        await self._bus.subscribe(Target("broadcast"), self._deliver_to_many)
        await self._bus.registry.beat()
        self._heartbeat = self.spawn(self._beat())

    async def stop(self) -> None:
        """Stop timers; the sessions stay resumable on another replica for their grace period."""
        tasks = [t for t in (self._heartbeat, *self._endings.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(BusUnavailable):
            for local in list(self.by_id.values()):
                await self._bus.registry.detach(local.id, _pack(local.data), local.mailbox.acked)
            await self._bus.registry.leave()
        await asyncio.gather(*self._background, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def one_handshake(self, session_id: object) -> AsyncIterator[None]:
        """Handshakes resuming the same session here go one at a time: a resume token is good for one
        resume, so the second finds it rotated (two at once both took the session, and the first
        socket was left holding nothing)."""
        if not valid_session_id(session_id):
            yield
            return
        while (under_way := self._handshakes.get(session_id)) is not None:
            await under_way.wait()
        self._handshakes[session_id] = ended = asyncio.Event()
        try:
            yield
        finally:
            del self._handshakes[session_id]
            ended.set()

    def for_user(self, identifier: str) -> list[LocalSession]:
        return [self.by_id[i] for i in self._by_user.get(identifier, ()) if i in self.by_id]

    async def _deliver(self, envelope: Envelope, offset: str, epoch: str) -> None:
        """Bus handler for session channels: to the session's mailbox, or a takeover to act on."""
        local = self.by_id.get(envelope.target.id)
        if local is None:
            return
        if envelope.event == TAKEOVER:
            if envelope.origin != self._bus.settings.replica_id:
                await self._replaced(local)
        elif not envelope.event.startswith(CONTROL_PREFIX):
            await local.mailbox.deliver(envelope, offset, epoch)

    async def _deliver_to_many(self, envelope: Envelope, offset: str, epoch: str) -> None:
        """Bus handler for user and broadcast channels: every matching session here, once each."""
        if envelope.event.startswith(CONTROL_PREFIX) or envelope.event == ASK:
            return
        if envelope.target.kind == "user":
            targets = self.for_user(envelope.target.id)
        else:
            targets = list(self.by_id.values())
        for local in targets:
            await local.mailbox.deliver(envelope, "", "")

    async def restore(self) -> None:
        """Once a lost bus subscription is back, every session here catches up from its log (after
        registering again what Redis lost, if it lost anything meanwhile)."""
        try:
            if await self._bus.registry.beat():
                await self._register_again()
        except BusUnavailable as exc:
            log.warning("after the subscription came back, the registry check failed: %s", exc)
        for local in self.by_id.values():
            if (replay := local.mailbox.restore()) is not None:
                self.spawn(replay)

    async def _register_again(self) -> None:
        """Redis lost data: sessions held here whose records are gone get them back, with new logs."""
        held = [
            Held(s.id, s.user.to_dict() if s.user else None, s.thread_id, s.token_hash, _pack(s.data), "0-0")
            for s in self.by_id.values()
        ]
        restored = await self._bus.registry.restore(held)
        log.warning("Redis lost data: registered %d of %d sessions held here again", len(restored), len(held))
        for session_id in restored:
            if (local := self.by_id.get(session_id)) is not None and (replay := local.mailbox.restore()):
                self.spawn(replay)

    async def attach(self, local: LocalSession) -> None:
        """Hold the session here: its channel, and its user's channel while any of theirs is here."""
        self.by_id[local.id] = local
        self.by_sid[local.sid] = local
        await self._bus.subscribe(Target.session(local.id), self._deliver)
        if local.user is not None:
            mine = self._by_user.setdefault(local.user.identifier, set())
            mine.add(local.id)
            if len(mine) == 1:
                await self._bus.subscribe(Target("user", local.user.identifier), self._deliver_to_many)

    async def detach(self, local: LocalSession) -> None:
        """Let go of the session's socket and channels (its mailbox stops replaying, and its hook
        calls not started yet never run)."""
        local.mailbox.open = False
        local.hooks.drop_waiting()
        self._dirty.discard(local.id)
        del self.by_id[local.id]
        await self._bus.unsubscribe(Target.session(local.id))
        if local.user is not None:
            mine = self._by_user.get(local.user.identifier, set())
            mine.discard(local.id)
            if not mine:
                self._by_user.pop(local.user.identifier, None)
                await self._bus.unsubscribe(Target("user", local.user.identifier))

    async def release(self, local: LocalSession) -> None:
        """Forget a session whose handshake failed: its socket, its channels."""
        self.by_sid.pop(local.sid, None)
        if self.by_id.get(local.id) is local:
            await self.detach(local)

    def end_after_grace(self, local: LocalSession, end: Callable[[], Awaitable[None]]) -> None:
        """Record the disconnect, then run `end` (on_chat_end) and delete the session unless it
        resumes within its grace period."""
        self._endings[local.id] = self.spawn(self._end_after_grace(local, end))

    def cancel_ending(self, session_id: str) -> None:
        if (ending := self._endings.pop(session_id, None)) is not None:
            ending.cancel()

    async def _end_after_grace(self, local: LocalSession, end: Callable[[], Awaitable[None]]) -> None:
        if not await self.save_detached(local):
            return  # another replica holds it now
        grace = self._bus.settings.session_grace_seconds
        log.info("session %s detached; resumable for %gs", local.id, grace)
        await asyncio.sleep(grace)
        self._endings.pop(local.id, None)
        record = await _retrying(lambda: self._bus.registry.get(local.id), f"the end of session {local.id}")
        if record is not None and (record.connected or record.replica != self._bus.settings.replica_id):
            return  # resumed elsewhere
        local.hooks.cancel()
        await end()
        await _retrying(lambda: self._bus.registry.delete(local.id), f"the end of session {local.id}")

    def data_changed(self, session_id: str) -> None:
        """Save the session's custom keys and acked offset soon (coalesced), so they follow it."""
        if session_id not in self._dirty:
            self._dirty.add(session_id)
            self.spawn(self._save_state(session_id))

    async def _save_state(self, session_id: str) -> None:
        await asyncio.sleep(0)  # coalesce the changes made in the same step
        self._dirty.discard(session_id)
        if (local := self.by_id.get(session_id)) is not None:
            await self._bus.registry.save_state(session_id, _pack(local.data), local.mailbox.acked)

    async def save_detached(self, local: LocalSession) -> bool:
        """Record the disconnect with what follows the session (custom keys, acked offset); retried
        while Redis is away. Only the replica that holds the session in the registry may do it:
        False if another one does."""
        data, acked = _pack(local.data), local.mailbox.acked
        return await _retrying(
            lambda: self._bus.registry.detach(local.id, data, acked), f"the detach of {local.id}"
        )

    async def _beat(self) -> None:
        """One heartbeat per interval for the whole replica; re-register what Redis lost; sweep
        the sessions of dead replicas."""
        while True:
            await asyncio.sleep(self._bus.settings.heartbeat_seconds)
            try:
                if await self._bus.registry.beat():
                    await self._register_again()
                await self._bus.registry.sweep()
            except BusUnavailable as exc:
                log.warning("heartbeat failed: %s", exc)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` in the background; it is awaited when the server stops."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, BusUnavailable):
                log.warning("a background step gave up: %s", exc)
            else:
                log.error("a background step failed", exc_info=exc)


async def _retrying(step: Callable[[], Awaitable[_T]], what: str) -> _T:
    """Run `step` until the bus answers (backing off to 2 s between tries)."""
    backoff = 0.05
    while True:
        try:
            return await step()
        except BusUnavailable as exc:
            log.warning("%s waits for the bus: %s", what, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


def _pack(data: dict[str, Any]) -> bytes:
    return msgpack.packb(data) if data else b""


def unpack(data: bytes) -> dict[str, Any]:
    """Saved custom keys, or {} if unreadable."""
    if not data:
        return {}
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception:
        log.warning("ignored unreadable saved session state")
        return {}
    return value if isinstance(value, dict) else {}
