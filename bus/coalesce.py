"""Ephemeral envelopes of one session that follow each other closely travel as one (token streams).

A session has at most one such envelope on its way at a time. One that comes while another is on its
way, or within `window` seconds of the last one sent, is held, and the next ones are merged into it
(the caller's `merge` joins two payloads, or refuses); what is held goes when the one on its way has
arrived and the window has passed. So a stream costs one envelope per window when the bus is quick,
and fewer, larger ones when it is slow: the batching grows with the load, never the queue. Sends run in
the background (the caller gets no receipt); any other send to the session first waits for them and
sends what is held, so a session's events keep their order. A held payload that grows past
MAX_HELD_BYTES makes its sender wait for the one on its way (backpressure, and a bounded envelope).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bus.envelope import Envelope, EnvelopeError
from bus.errors import BusUnavailable, SessionNotFound

log = logging.getLogger("switchboard.bus")

#: The payload of `held` followed by `next` as one, or None if they cannot be joined.
Merge = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None]
Send = Callable[[Envelope], Awaitable[Any]]
#: A held payload's size (its `token`) past which a sender waits instead of merging more.
MAX_HELD_BYTES = 16 * 1024


@dataclass(slots=True)
class _Session:
    merge: Merge
    held: Envelope | None = None
    #: The envelope on its way.
    sending: asyncio.Future[Any] | None = None
    last_sent: float = 0.0
    #: Ends the window: sends what is held, or forgets the session when nothing is.
    timer: asyncio.TimerHandle | None = None


class Coalescer:
    def __init__(self, send: Send, window: float) -> None:
        self._send = send
        self._window = window
        self._sessions: dict[str, _Session] = {}
        #: Envelopes that travelled inside another one (for tests and operators).
        self.merged = 0

    async def add(self, envelope: Envelope, merge: Merge) -> None:
        """Send `envelope` (in the background) or hold it to travel with the next ones."""
        session_id = envelope.target.id
        while True:  # a flush awaits: other senders may hold something again meanwhile
            state = self._sessions.get(session_id)
            if state is None:
                self._sessions[session_id] = state = _Session(merge)
            if state.held is None:
                break
            joined = state.merge(state.held.payload, envelope.payload) if state.merge is merge else None
            if joined is not None and len(str(joined.get("token", ""))) <= MAX_HELD_BYTES:
                state.held = dataclasses.replace(state.held, payload=joined)
                self.merged += 1
                return
            await self.flush(session_id)
        state.merge = merge
        loop = asyncio.get_running_loop()
        if state.sending is None and loop.time() - state.last_sent >= self._window:
            self._start(session_id, state, self._send_quietly(envelope))
        else:
            state.held = envelope
            self._arm(session_id, state)

    async def flush(self, session_id: str) -> None:
        """Wait for the session's envelope on its way and send what is held (before another of its
        events goes); raises what that send raises."""
        state = self._sessions.get(session_id)
        if state is None:
            return
        while state.sending is not None:  # another's send: its outcome is not this caller's
            await asyncio.wait([state.sending])
        if state.held is not None:
            held, state.held = state.held, None
            await asyncio.shield(self._start(session_id, state, self._send(held)))

    async def close(self) -> None:
        """Send everything held (a closing bus)."""
        for session_id in list(self._sessions):
            try:
                await self.flush(session_id)
            except (BusUnavailable, SessionNotFound, EnvelopeError) as exc:
                log.warning("dropped held stream tokens of %s: %s", session_id, exc)
            state = self._sessions.pop(session_id, None)
            if state is not None and state.timer is not None:
                state.timer.cancel()

    def _start(self, session_id: str, state: _Session, sending: Awaitable[Any]) -> asyncio.Future[Any]:
        """`sending` is the session's one envelope on its way."""
        state.last_sent = asyncio.get_running_loop().time()
        state.sending = future = asyncio.ensure_future(sending)
        future.add_done_callback(lambda sent: self._arrived(session_id, state, sent))
        return future

    async def _send_quietly(self, envelope: Envelope) -> None:
        try:
            await self._send(envelope)
        except (BusUnavailable, SessionNotFound, EnvelopeError) as exc:
            log.warning("dropped stream tokens for %s: %s", envelope.target.id, exc)

    def _arrived(self, session_id: str, state: _Session, sent: asyncio.Future[Any]) -> None:
        if not sent.cancelled():
            sent.exception()  # a flush's caller reads it, if still there
        state.sending = None
        if self._sessions.get(session_id) is state:
            self._arm(session_id, state)

    def _arm(self, session_id: str, state: _Session) -> None:
        """What is held goes once the window since the last send has passed (at once if it has)."""
        if state.timer is not None:
            state.timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, state.last_sent + self._window - loop.time())
        state.timer = loop.call_later(delay, self._window_ended, session_id, state)

    def _window_ended(self, session_id: str, state: _Session) -> None:
        state.timer = None
        if self._sessions.get(session_id) is not state or state.sending is not None:
            return  # its arrival arms the window again
        if state.held is None:
            del self._sessions[session_id]
        else:
            held, state.held = state.held, None
            self._start(session_id, state, self._send_quietly(held))
