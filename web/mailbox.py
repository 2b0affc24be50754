"""The mailbox of one session held here: what its socket was sent, and catching up from its log.

Durable envelopes carry their log offset; the mailbox emits each offset at most once, in order. While
the log is replayed (on a resume, or after the bus subscription was lost) live envelopes wait in
`pending` and are emitted after the replay, the de-duplication by offset closing the seam.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bus import Bus, BusUnavailable, Envelope, offset_key
from web.protocol import ASK

log = logging.getLogger("switchboard.web")

#: Emits one client event to the session's socket.
Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
#: Shows a question (an `ask` envelope's payload) on the session's socket.
ShowAsk = Callable[[dict[str, Any]], Awaitable[None]]


class Mailbox:
    def __init__(
        self, session_id: str, bus: Bus, emit: Emit, show_ask: ShowAsk, *, acked: str = "0-0"
    ) -> None:
        self.session_id = session_id
        self._bus = bus
        self._emit_event = emit
        self._show_ask = show_ask
        #: Highest log offset emitted to this socket; durable envelopes at or below it are duplicates.
        self.last_offset = "0-0"
        #: Highest offset the client acknowledged: where a resume without `lastOffset` starts.
        self.acked = acked
        #: While the log is being replayed, live envelopes wait here, in order.
        self.pending: list[tuple[Envelope, str]] | None = None
        self.replaying = False
        #: The subscription was lost during a replay: read the log once more before going live.
        self.replay_again = False
        #: Cleared when the session leaves this replica: a running replay stops.
        self.open = True

    async def deliver(self, envelope: Envelope, offset: str) -> None:
        """A live envelope for this session ("" offset: not logged, e.g. a user or broadcast send)."""
        if self.pending is not None:
            self.pending.append((envelope, offset))
        else:
            await self._emit(envelope, offset)

    def ack(self, offset: str) -> bool:
        """The client processed everything up to `offset`; False if that was never sent to it."""
        if offset_key(offset) > offset_key(self.last_offset):
            return False
        if offset_key(offset) > offset_key(self.acked):
            self.acked = offset
        return True

    def hold(self, after: str) -> None:
        """Before a resume's replay: emit nothing live until the log after `after` is replayed."""
        self.last_offset = after
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
        requested: str | None = self.last_offset if resumed else None
        replayed, backoff, truncated = 0, 0.05, False
        while self.open:
            try:
                if requested is not None:
                    lost, first = await self._bus.lost_after(self.session_id, requested)
                    if lost:
                        truncated = True
                        bounds = {"requestedOffset": requested, "firstOffset": first}
                        await self._emit_event("replay_truncated", bounds)
                    requested = None
                replayed += await self._catch_up()
                break
            except BusUnavailable as exc:
                log.warning("replay for session %s waits for the bus: %s", self.session_id, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        if resumed and self.open:
            self._bus.observer.replayed(replayed, truncated)
            await self._emit_event("replayed", {"count": replayed})
        return replayed

    async def _catch_up(self) -> int:
        replayed = 0
        while True:
            while True:
                batch = await self._bus.read_log(self.session_id, self.last_offset)
                for offset, envelope in batch.entries:
                    replayed += await self._emit(envelope, offset)
                if batch.last:  # also past undecodable entries, which were skipped and counted
                    self.last_offset = max(self.last_offset, batch.last, key=offset_key)
                if not batch.more:
                    break
            assert self.pending is not None
            while self.pending:
                envelope, offset = self.pending.pop(0)
                await self._emit(envelope, offset)
            if not self.replay_again:
                # No await between this check and going live: nothing can slip in between.
                self.pending, self.replaying = None, False
                return replayed
            self.replay_again = False

    async def _emit(self, envelope: Envelope, offset: str) -> bool:
        """Emit to the socket unless it is a duplicate; returns whether a durable event went out."""
        if envelope.event == ASK:
            await self._show_ask(envelope.payload)
            return False
        if not offset:
            await self._emit_event(envelope.event, envelope.payload)
            self._bus.observer.delivered(envelope, "emitted")
            return False
        if offset_key(offset) <= offset_key(self.last_offset):
            self._bus.observer.delivered(envelope, "duplicate")
            return False  # already delivered: the seam between replay and live delivery
        self.last_offset = offset
        await self._emit_event(envelope.event, {**envelope.payload, "offset": offset})
        self._bus.observer.delivered(envelope, "emitted")
        return True
