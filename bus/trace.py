"""What the running task works on, for log lines: the envelope and the session it is for.

The bus sets both while a handler runs for a received envelope; the chat server sets the session while
a chat hook runs. `web/logs.py` puts them into JSON log lines.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from types import TracebackType

envelope_id: ContextVar[str | None] = ContextVar("switchboard_envelope_id", default=None)
session_id: ContextVar[str | None] = ContextVar("switchboard_session_id", default=None)


class working_on:  # used like a function: `with working_on(session=...):`
    """Within the block, log lines of this task name `session` and `envelope` (when given). A class,
    not a generator: it runs for every envelope a replica receives."""

    __slots__ = ("_envelope", "_session", "_tokens")

    def __init__(self, *, session: str | None = None, envelope: str | None = None) -> None:
        self._session, self._envelope = session, envelope
        self._tokens: tuple[Token[str | None] | None, Token[str | None] | None] = (None, None)

    def __enter__(self) -> None:
        self._tokens = (
            session_id.set(self._session) if self._session is not None else None,
            envelope_id.set(self._envelope) if self._envelope is not None else None,
        )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session_token, envelope_token = self._tokens
        if envelope_token is not None:
            envelope_id.reset(envelope_token)
        if session_token is not None:
            session_id.reset(session_token)
