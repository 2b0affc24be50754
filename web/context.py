"""Where a send goes: the HTTP context (nowhere) or a websocket context (one session, anywhere)."""

from __future__ import annotations

import uuid
from collections.abc import Generator
from contextvars import ContextVar
from typing import Any

import msgpack

from bus import Receipt
from web import runtime
from web.data import data_layer
from web.errors import ContextError, SessionDataUnavailable
from web.protocol import kept_in_history
from web.session import WebsocketSession
from web.user import User


class Context:
    """The current chat context. Awaiting it checks its session (see `init_ws_context`)."""

    __slots__ = ("_acting", "_checked", "_thread_id", "_user", "session")

    def __init__(
        self,
        session: WebsocketSession | None,
        user: User | None = None,
        thread_id: str | None = None,
        *,
        acting: User | None = None,
    ) -> None:
        #: None in an HTTP context: sends succeed and reach no socket.
        self.session = session
        self._user, self._thread_id, self._acting = user, thread_id, acting
        self._checked = session is None
        if session is not None and session.resolved and acting is not None:
            # Held here: checked now, so not even the session's custom keys are reached unchecked.
            session.authorize(acting)
            self._checked = True

    @property
    def user(self) -> User | None:
        return self.session.user if self.session is not None else self._user

    @property
    def thread_id(self) -> str | None:
        return self.session.thread_id if self.session is not None else self._thread_id

    def __await__(self) -> Generator[Any, None, Context]:
        return self.ready().__await__()

    async def ready(self) -> Context:
        """Look the session up and check the acting user (once); SessionNotFound, SessionForbidden."""
        if not self._checked and self.session is not None:
            await self.session.resolve()
            if self._acting is not None:
                self.session.authorize(self._acting)
            self._checked = True
        return self

    async def emit(self, event: str, payload: dict[str, Any]) -> Receipt | None:
        """Send a client event; returns the receipt (None in an HTTP context: no socket)."""
        await self.ready()
        receipt = await self.session.emit(event, payload) if self.session is not None else None
        if self.thread_id is not None and kept_in_history(event):
            if (layer := data_layer(runtime.current().bus)) is not None:
                owner = self.user.identifier if self.user is not None else None
                await layer.append(self.thread_id, event, payload, owner)
        return receipt


_context: ContextVar[Context | None] = ContextVar("switchboard_context", default=None)


def get_context() -> Context:
    ctx = _context.get()
    if ctx is None:
        raise ContextError("no chat context: call init_http_context() or init_ws_context(session) first")
    return ctx


async def ready_context() -> Context:
    """The current context, its session looked up: what a send starts with."""
    return await get_context().ready()


def init_http_context(user: User | None = None, thread_id: str | None = None) -> Context:
    """Enter an HTTP context: sends succeed and reach no socket.

    With data persistence on, they are stored in thread `thread_id` (a new thread if None).
    """
    if thread_id is None and runtime.settings().data_persistence:
        thread_id = str(uuid.uuid4())
    ctx = Context(None, user, thread_id)
    _context.set(ctx)
    return ctx


def init_ws_context(session_or_id: WebsocketSession | str, user: User | None = None) -> Context:
    """Enter the context of one websocket session, wherever its socket is.

    Works called plainly, as in Chainlit, or awaited: the context is entered at once; the session is
    looked up when the result is awaited or, at the latest, at the first send (SessionNotFound, 404).
    Pass the acting `user` (e.g. from `authenticate_user`) to refuse, with SessionForbidden (403),
    sending to somebody else's session; that check holds whether or not the call was awaited.
    """
    if isinstance(session_or_id, str):
        session = WebsocketSession.get_by_id(session_or_id)
    else:
        session = session_or_id
    ctx = Context(session, acting=user)
    _context.set(ctx)
    return ctx


class _UserSession:
    """`user_session.get/set`: built-in keys everywhere; custom keys where the socket is held."""

    _BUILT_IN = ("id", "user", "thread_id")

    def get(self, key: str, default: Any = None) -> Any:
        ctx = get_context()
        if key == "id":
            return ctx.session.id if ctx.session else None
        if key == "user":
            return ctx.user
        if key == "thread_id":
            return ctx.thread_id
        return self._data(ctx, key).get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Set a custom key; the value must be msgpack-serialisable, as it follows the session."""
        if key in self._BUILT_IN:
            raise KeyError(f"user_session key {key!r} is built in and cannot be set")
        try:
            msgpack.packb({key: value})
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(
                f"user_session value for {key!r} must be msgpack-serialisable "
                f"(None, bool, int, float, str, bytes, list, dict with str keys): {exc}"
            ) from None
        if not _str_keys(value):
            raise TypeError(f"user_session value for {key!r} has a dict with non-string keys")
        ctx = get_context()
        self._data(ctx, key)[key] = value
        server = runtime.current().server
        assert ctx.session is not None and server is not None
        server.data_changed(ctx.session.id)

    @staticmethod
    def _data(ctx: Context, key: str) -> dict[str, Any]:
        server = runtime.current().server if ctx.session is not None else None
        local = server.local(ctx.session.id) if server is not None and ctx.session is not None else None
        if local is None:
            raise SessionDataUnavailable(key)
        return local.data


def _str_keys(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _str_keys(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_str_keys(v) for v in value)
    return True


user_session = _UserSession()
