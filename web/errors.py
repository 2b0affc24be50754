"""Exceptions of the chat runtime, each with one documented meaning."""

from __future__ import annotations

from bus import SessionNotFound

__all__ = ["ContextError", "SessionDataUnavailable", "SessionForbidden", "SessionNotFound"]


class SessionForbidden(PermissionError):
    """The acting user may not send to this session (it is somebody else's). Endpoints answer 403."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"not allowed to send to session {session_id!r}")
        self.session_id = session_id


class ContextError(RuntimeError):
    """A send or `user_session` call was made outside any HTTP or websocket context."""


class SessionDataUnavailable(KeyError):
    """A custom `user_session` key was used where the session's data does not live.

    Custom keys live in the process that holds the session's socket; in an HTTP context, or a
    websocket context on another process, only the built-in keys (id, user, thread_id) exist.
    """

    def __str__(self) -> str:
        return (
            f"user_session key {self.args[0]!r} is only available in the process holding the "
            "session's socket (in on_chat_start / on_message); here only 'id', 'user' and "
            "'thread_id' exist"
        )
