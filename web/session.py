"""Sessions by address: one chat socket, held by some replica, reachable from any process."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from bus import Envelope, Receipt, SessionNotFound, Target
from web import runtime
from web.auth import SEND_SCOPE
from web.errors import ContextError, SessionForbidden
from web.protocol import CONTROL_PREFIX, coalesced, join_tokens, logged
from web.user import User


class WebsocketSession:
    """A session by id. `emit` reaches its socket on whichever replica holds it.

    `WebsocketSession.get_by_id(id)` returns at once, as Chainlit's does; the session is looked up
    when the handle is awaited (`await WebsocketSession.get_by_id(id)`) or, at the latest, at the
    first send, which raises SessionNotFound (404) for an unknown or expired session.
    """

    __slots__ = ("_acting", "_thread_id", "_user", "id", "resolved")

    def __init__(
        self,
        session_id: str,
        user: User | None = None,
        thread_id: str | None = None,
        *,
        resolved: bool = True,
        acting: User | None = None,
    ) -> None:
        self.id = session_id
        self._user = user
        self._thread_id = thread_id
        #: Whether the session was found (its user and thread are known).
        self.resolved = resolved
        self._acting = acting

    @classmethod
    def get_by_id(cls, session_id: str, *, user: User | None = None) -> WebsocketSession:
        """The session `session_id`; await it to look it up now (SessionNotFound, SessionForbidden).

        With `user`, sends are refused with SessionForbidden (403) unless the session is that user's
        or the user holds the `sessions:send` scope (a service principal).
        """
        session = cls(session_id, resolved=False, acting=user)
        server = runtime.current().server  # ContextError here, not later, when there is no bus
        if server is not None and (local := server.local(session_id)) is not None:
            session._found(local.user, local.thread_id)
        return session

    def __await__(self) -> Generator[Any, None, WebsocketSession]:
        return self.resolve().__await__()

    async def resolve(self) -> WebsocketSession:
        """Look the session up (once) and check the acting user; returns the session."""
        if not self.resolved:
            record = await runtime.current().bus.registry.get(self.id)
            if record is None:
                raise SessionNotFound(self.id)
            self._found(User.from_dict(record.user) if record.user else None, record.thread_id)
        return self

    def _found(self, user: User | None, thread_id: str | None) -> None:
        self._user, self._thread_id, self.resolved = user, thread_id, True
        if self._acting is not None:
            self.authorize(self._acting)

    @property
    def user(self) -> User | None:
        """The user the session belongs to (None without login)."""
        self._require_resolved("user")
        return self._user

    @property
    def thread_id(self) -> str | None:
        self._require_resolved("thread_id")
        return self._thread_id

    def _require_resolved(self, what: str) -> None:
        if not self.resolved:
            raise ContextError(
                f"the session's {what} is known once it is looked up: "
                "`await WebsocketSession.get_by_id(...)` or `await init_ws_context(...)` first"
            )

    def authorize(self, user: User) -> None:
        """Raise SessionForbidden unless `user` may send to this session."""
        if SEND_SCOPE in user.scopes:
            return
        if self._user is None or self._user.identifier != user.identifier:
            raise SessionForbidden(self.id)

    async def emit(self, event: str, payload: dict[str, Any]) -> Receipt | None:
        """Send a client event through the session's log and channel; SessionNotFound if expired.

        Every event takes the same path, even on the replica holding the socket, so events keep
        their order and a reload or a replica crash cannot lose a durable one. Stream tokens may
        travel joined with the next ones (then None: no receipt of their own).
        """
        if event.startswith(CONTROL_PREFIX):
            raise ValueError(f"event names starting with {CONTROL_PREFIX!r} are reserved")
        await self.resolve()
        bus = runtime.current().bus
        envelope = Envelope(Target.session(self.id), event, payload, bus.settings.replica_id)
        if coalesced(event):
            return await bus.stream(envelope, join_tokens)
        return await bus.send(envelope, durable=logged(event))

    def __repr__(self) -> str:
        return f"WebsocketSession({self.id!r})"
