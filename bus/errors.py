"""The bus's exceptions, each with one documented meaning."""

from __future__ import annotations


class BusUnavailable(ConnectionError):
    """The bus backend could not be reached (after its bounded retries)."""


class SessionNotFound(LookupError):
    """No live or resumable session has this id (never existed, or expired). Endpoints answer 404."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} not found (it never existed or has expired)")
        self.session_id = session_id
