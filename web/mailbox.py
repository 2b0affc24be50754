"""The mailbox of one session held here: what its socket was sent, and catching up from its log.

Durable envelopes carry their log offset and the log's epoch; the mailbox emits each offset at most once,
in order, within one epoch. While the log is replayed (on a resume, or after the bus subscription was
lost) live envelopes wait in `pending` and are emitted after the replay, the de-duplication by offset
closing the seam. A new epoch (Redis lost the log) starts the count again, and the client is told
(`log_reset`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bus import Bus, BusUnavailable, Envelope, offset_key
from bus.core import trimmed_after
from web.protocol import ASK

log = logging.getLogger("switchboard.web")

#: Emits one client event to the session's socket.
Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
#: Shows a question (an `ask` envelope's payload) on the session's socket.
ShowAsk = Callable[[dict[str, Any]], Awaitable[None]]
#: Waits until the socket has written what it was given (a replay's pace is the client's).
Drained = Callable[[], Awaitable[None]]


async def _at_once() -> None:
    """For a socket that writes at once (tests)."""


#: Live envelopes held during a replay, at most; beyond it durable ones are read from the log again
#: and ephemeral ones (tokens, activity markers) are dropped.
MAX_PENDING = 1000


class Mailbox:
    __slots__ = (
        "_bus",
        "_drained",
        "_emit_event",
        "_replayed",
        "_show_ask",
        "acked",
        "epoch",
        "last_offset",
        "open",
        "pending",
        "replay_again",
        "replaying",
        "session_id",
    )

    def __init__(
        self,
        session_id: str,
        bus: Bus,
        emit: Emit,
        show_ask: ShowAsk,
        *,
        acked: str = "0-0",
        drained: Drained = _at_once,
    ) -> None:
        self.session_id = session_id
        self._bus = bus
        self._emit_event = emit
        self._show_ask = show_ask
        self._drained = drained
        #: The log's epoch the offsets below count in (None: not known yet).
        self.epoch: str | None = None
        #: Highest log offset emitted to this socket; durable envelopes at or below it are duplicates.
        self.last_offset = "0-0"
        #: Highest offset the client acknowledged: where a resume without `lastOffset` starts.
        self.acked = acked
        #: While the log is being replayed, live envelopes wait here, in order.
        self.pending: list[tuple[Envelope, str, str]] | None = None
        self.replaying = False
        #: The subscription was lost during a replay: read the log once more before going live.
        self.replay_again = False
        #: Cleared when the session leaves this replica: a running replay stops.
        self.open = True
        #: Durable events the running replay emitted from the log, across its retries.
        self._replayed = 0

    async def deliver(self, envelope: Envelope, offset: str, epoch: str) -> None:
        """A live envelope for this session ("" offset: not logged, e.g. a user or broadcast send)."""
        if self.pending is None:
            await self._emit(envelope, offset, epoch)
        elif len(self.pending) < MAX_PENDING:
            self.pending.append((envelope, offset, epoch))
        elif offset:
            self.replay_again = True  # it is in the log: the running replay reads it from there
        else:
            log.warning(
                "session %s: dropped an ephemeral %s during a long replay", self.session_id, envelope.event
            )

    def ack(self, offset: str) -> bool:
        """The client processed everything up to `offset`; False if that was never sent to it."""
        if offset_key(offset) > offset_key(self.last_offset):
            return False
        if offset_key(offset) > offset_key(self.acked):
            self.acked = offset
        return True

    def hold(self, after: str, epoch: str | None = None) -> None:
        """Before a resume's replay: emit nothing live until the log after `after` (counted in
        `epoch`, if the client says) is replayed."""
        self.last_offset, self.epoch = after, epoch
        self.pending, self.replaying = [], True

    def restore(self) -> Coroutine[Any, Any, int] | None:
        """After a lost subscription: the replay to run, or None if one is running (it reads again)."""
        if self.replaying:
            self.replay_again = True
            return None
        if self.pending is None:
            self.pending = []
        self.replaying = True
        return self.replay(resumed=False)

    async def replay(self, *, resumed: bool) -> int:
        """Emit the log after `last_offset` in bounded batches, then the live envelopes held
        meanwhile, until nothing new arrived; retried while the bus is unreachable.

        On a resume the client is told if part of what it asked for was trimmed away
        (`replay_truncated`) and how many messages it got (`replayed`). Returns that count.
        """
        self._replayed, backoff, checked, truncated = 0, 0.05, False, False
        while self.open:
            try:
                if not checked:
                    truncated = await self._check_bounds(resumed=resumed)
                    checked = True
                await self._catch_up()  # counts in _replayed, also what it emitted before a failure
                break
            except BusUnavailable as exc:
                log.warning("replay for session %s waits for the bus: %s", self.session_id, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                log.exception("replay for session %s failed; delivering live from now on", self.session_id)
                held, self.pending, self.replaying, self.replay_again = self.pending or [], None, False, False
                for envelope, offset, epoch in held:
                    await self._emit(envelope, offset, epoch)
                break
        replayed = self._replayed
        if resumed and self.open:
            self._bus.observer.replayed(replayed, truncated)
            await self._emit_event("replayed", {"count": replayed})
        return replayed

    async def _check_bounds(self, *, resumed: bool) -> bool:
        """Before reading the log: a new epoch starts the count again; a claimed offset beyond the
        log is not believed; on a resume, a trimmed start is reported (then True)."""
        first, last, epoch = await self._bus.log_bounds(self.session_id)
        if epoch and epoch != self.epoch:
            await self._switch_epoch(epoch)
        if offset_key(self.last_offset) > offset_key(last):
            self.last_offset = last  # the client claims more than was ever sent: trust the log
        if resumed and trimmed_after(self.last_offset, first, last):
            truncated = {"requestedOffset": self.last_offset, "firstOffset": first}
            await self._emit_event("replay_truncated", truncated)
            return True
        return False

    async def _switch_epoch(self, epoch: str) -> None:
        """Offsets count in `epoch` from now on. If they counted in another log before (Redis lost
        it), start again and tell the client; if the epoch was unknown, just learn it."""
        previous, self.epoch = self.epoch, epoch
        if previous is not None:
            self.last_offset, self.acked = "0-0", "0-0"
            log.warning("session %s: its log was lost and started again (epoch %s)", self.session_id, epoch)
            await self._emit_event("log_reset", {"epoch": epoch, "previousEpoch": previous})

    async def _catch_up(self) -> int:
        """Read the log, then emit what was held, until nothing new arrived; returns how many
        durable events it emitted from the log (added to `_replayed` as each one goes out)."""
        start = self._replayed
        while True:
            while True:
                await self._drained()  # one batch at a time on the socket's queue
                batch = await self._bus.read_log(self.session_id, self.last_offset)
                for offset, envelope in batch.entries:
                    self._replayed += await self._emit(envelope, offset, self.epoch or "")
                if batch.last:  # also past undecodable entries, which were skipped and counted
                    self.last_offset = max(self.last_offset, batch.last, key=offset_key)
                if not batch.more:
                    break
            assert self.pending is not None
            while self.pending:
                envelope, offset, epoch = self.pending.pop(0)
                await self._emit(envelope, offset, epoch)
            if not self.replay_again:
                # No await between this check and going live: nothing can slip in between.
                self.pending, self.replaying = None, False
                return self._replayed - start
            self.replay_again = False

    async def _emit(self, envelope: Envelope, offset: str, epoch: str) -> bool:
        """Emit to the socket unless it is a duplicate; returns whether a durable event went out."""
        if envelope.event == ASK:
            await self._show_ask(envelope.payload)
            return False
        if not offset:
            await self._emit_event(envelope.event, envelope.payload)
            self._bus.observer.delivered(envelope, "emitted")
            return False
        if epoch != self.epoch:
            await self._switch_epoch(epoch)
        if offset_key(offset) <= offset_key(self.last_offset):
            self._bus.observer.delivered(envelope, "duplicate")
            return False  # already delivered: the seam between replay and live delivery
        self.last_offset = offset
        await self._emit_event(envelope.event, {**envelope.payload, "offset": offset, "epoch": epoch})
        self._bus.observer.delivered(envelope, "emitted")
        return True
