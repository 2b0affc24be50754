"""Where a send goes: the HTTP context (nowhere) or a websocket context (one session, anywhere)."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from bus import Bus, Receipt, get_settings
from web.data import HISTORY_EVENTS, data_layer
from web.errors import ContextError, SessionDataUnavailable
from web.session import WebsocketSession
from web.user import User

if TYPE_CHECKING:
    from web.server import ChatServer


@dataclass(frozen=True, slots=True)
class Context:
    #: None in an HTTP context: sends succeed and reach no socket.
    session: WebsocketSession | None
    user: User | None
    thread_id: str | None

    async def emit(self, event: str, payload: dict[str, Any]) -> Receipt | None:
        """Send a client event; returns the receipt (None in an HTTP context: no socket)."""
        receipt = await self.session.emit(event, payload) if self.session is not None else None
        if self.thread_id is not None and event in HISTORY_EVENTS:
            bus = self.session.bus if self.session is not None else current_bus()[0]
            if (layer := data_layer(bus)) is not None:
                owner = self.user.identifier if self.user is not None else None
                await layer.append(self.thread_id, event, payload, owner)
        return receipt


_context: ContextVar[Context | None] = ContextVar("switchboard_context", default=None)
#: The bus of a worker's `session_context`, for processes without a mounted chat server.
_worker_bus: ContextVar[Bus | None] = ContextVar("switchboard_worker_bus", default=None)
_server: ChatServer | None = None


def current_bus() -> tuple[Bus, ChatServer | None]:
    """The bus this code should use, and the chat server of this process if it runs one."""
    if (bus := _worker_bus.get()) is not None:
        server = _server if _server is not None and _server.bus is bus else None
        return bus, server
    if _server is not None and _server.serves_this_loop():
        return _server.bus, _server
    raise ContextError(
        "no bus here: mount the chat app with mount_app() and let the app start, "
        "or use `async with workers.session_context(session_id)` in a worker"
    )


def get_context() -> Context:
    ctx = _context.get()
    if ctx is None:
        raise ContextError(
            "no chat context: call init_http_context() or `await init_ws_context(session)` first"
        )
    return ctx


def init_http_context(user: User | None = None, thread_id: str | None = None) -> Context:
    """Enter an HTTP context: sends succeed and reach no socket.

    With data persistence on, they are stored in thread `thread_id` (a new thread if None).
    """
    if thread_id is None and get_settings().data_persistence:
        thread_id = str(uuid.uuid4())
    ctx = Context(session=None, user=user, thread_id=thread_id)
    _context.set(ctx)
    return ctx


async def init_ws_context(session_or_id: WebsocketSession | str, *, user: User | None = None) -> Context:
    """Enter the context of one websocket session, wherever its socket is (awaited: it may look it up).

    Pass the acting `user` (e.g. from `authenticate_user`) to refuse, with SessionForbidden (403),
    sending to somebody else's session.
    """
    if isinstance(session_or_id, str):
        session = await WebsocketSession.get_by_id(session_or_id, user=user)
    else:
        session = session_or_id
        if user is not None:
            session.authorize(user)
    ctx = Context(session=session, user=session.user, thread_id=session.thread_id)
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
        data = self._data(ctx, key)
        data[key] = value
        assert ctx.session is not None and ctx.session.server is not None
        ctx.session.server.data_changed(ctx.session.id)

    @staticmethod
    def _data(ctx: Context, key: str) -> dict[str, Any]:
        local = ctx.session.local() if ctx.session else None
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
