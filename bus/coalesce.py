"""Ephemeral envelopes of one session that follow each other closely travel as one (token streams).

The first envelope after a quiet window goes at once; the ones that follow within `window` seconds of
the last send are held and merged (the caller's `merge` joins two payloads, or refuses), and what is
held goes when the window ends. Any other send to the session first sends what is held, so a session's
events keep their order. A stream of tokens then costs one envelope per window, not one per token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bus.envelope import Envelope
from bus.errors import BusUnavailable, SessionNotFound

log = logging.getLogger("switchboard.bus")

#: The payload of `held` followed by `next` as one, or None if they cannot be joined.
Merge = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None]
Send = Callable[[Envelope], Awaitable[Any]]


@dataclass(slots=True)
class _Session:
    merge: Merge
    held: Envelope | None = None
    #: The send of what was held, while it runs.
    sending: asyncio.Task[None] | None = None
    #: Ends the window: sends what is held, or forgets the session if nothing is.
    timer: asyncio.TimerHandle | None = None


class Coalescer:
    def __init__(self, send: Send, window: float) -> None:
        self._send = send
        self._window = window
        self._sessions: dict[str, _Session] = {}
        #: Envelopes that travelled inside another one (for tests and operators).
        self.merged = 0

    async def add(self, envelope: Envelope, merge: Merge) -> Any:
        """Send `envelope` now (returns the send's result) or hold it to travel with the next ones
        (returns None)."""
        session_id = envelope.target.id
        state = self._sessions.get(session_id)
        if state is None:
            self._sessions[session_id] = state = _Session(merge)
            self._arm(session_id, state)
            return await self._send(envelope)
        if state.held is not None:
            joined = state.merge(state.held.payload, envelope.payload) if state.merge is merge else None
            if joined is not None:
                state.held = dataclasses.replace(state.held, payload=joined)
                self.merged += 1
                return None
            await self.flush(session_id)
            return await self.add(envelope, merge)
        state.held, state.merge = envelope, merge
        return None

    async def flush(self, session_id: str) -> None:
        """Send what is held for the session now (before another of its events goes)."""
        state = self._sessions.get(session_id)
        if state is None:
            return
        if state.sending is not None:
            await asyncio.shield(state.sending)
        if state.held is not None:
            held, state.held = state.held, None
            await self._send(held)

    async def close(self) -> None:
        """Send everything held (a closing bus)."""
        for session_id in list(self._sessions):
            try:
                await self.flush(session_id)
            except (BusUnavailable, SessionNotFound) as exc:
                log.warning("dropped held stream tokens of %s: %s", session_id, exc)
            state = self._sessions.pop(session_id, None)
            if state is not None and state.timer is not None:
                state.timer.cancel()

    def _arm(self, session_id: str, state: _Session) -> None:
        state.timer = asyncio.get_running_loop().call_later(self._window, self._window_ended, session_id)

    def _window_ended(self, session_id: str) -> None:
        state = self._sessions.get(session_id)
        if state is None:
            return
        if state.held is None and state.sending is None:
            del self._sessions[session_id]
            return
        if state.sending is None and state.held is not None:
            held, state.held = state.held, None
            state.sending = asyncio.ensure_future(self._send_held(held))
            state.sending.add_done_callback(lambda _: self._sent(session_id, state))
        else:
            self._arm(session_id, state)

    async def _send_held(self, envelope: Envelope) -> None:
        try:
            await self._send(envelope)
        except (BusUnavailable, SessionNotFound) as exc:
            log.warning("dropped stream tokens for %s: %s", envelope.target.id, exc)

    def _sent(self, session_id: str, state: _Session) -> None:
        state.sending = None
        if self._sessions.get(session_id) is state:
            self._arm(session_id, state)
