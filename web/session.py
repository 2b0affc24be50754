"""Sessions: the address of one chat socket, held by some replica, reachable from any process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bus import Bus, Envelope, Receipt, Target
from web.errors import SessionForbidden, SessionNotFound
from web.protocol import CONTROL_PREFIX, UNLOGGED_EVENTS
from web.user import User

if TYPE_CHECKING:
    from web.server import ChatServer


@dataclass(slots=True)
class LocalSession:
    """A session whose socket this process holds."""

    id: str
    sid: str
    user: User | None
    thread_id: str | None
    data: dict[str, Any] = field(default_factory=dict)
    started: bool = False
    #: Set when a newer connection resumed the session: this socket closes without ending it.
    replaced: bool = False
    #: Highest log offset emitted to this socket; durable envelopes at or below it are duplicates.
    last_offset: str = "0-0"
    #: Highest offset the client acknowledged: where a resume without `lastOffset` starts.
    acked: str = "0-0"
    #: While the log is being replayed (or a gap is open), live envelopes wait here, in order.
    pending: list[tuple[Envelope, str]] | None = None
    #: A replay task is running for this session.
    replaying: bool = False
    #: A gap opened during a replay: read the log once more before going live.
    replay_again: bool = False
    #: Correlation ids of the questions shown on this socket.
    asked: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class WebsocketSession:
    """A session by address: `emit` reaches its socket on whichever replica holds it."""

    id: str
    user: User | None
    thread_id: str | None
    bus: Bus
    server: ChatServer | None

    @classmethod
    async def get_by_id(cls, session_id: str, *, user: User | None = None) -> WebsocketSession:
        """Look a session up on this process or in the registry; raises SessionNotFound.

        With `user`, also raises SessionForbidden unless the session is that user's or the
        user holds the `sessions:send` scope (a service principal).
        """
        from web.context import current_bus

        bus, server = current_bus()
        if server is not None and (local := server.local(session_id)) is not None:
            session = cls(session_id, local.user, local.thread_id, bus, server)
        else:
            record = await bus.registry.get(session_id)
            if record is None:
                raise SessionNotFound(session_id)
            owner = User.from_dict(record.user) if record.user else None
            session = cls(session_id, owner, record.thread_id, bus, server)
        if user is not None:
            session.authorize(user)
        return session

    def authorize(self, user: User) -> None:
        """Raise SessionForbidden unless `user` may send to this session."""
        from web.auth import SEND_SCOPE

        if SEND_SCOPE in user.scopes:
            return
        if self.user is None or self.user.identifier != user.identifier:
            raise SessionForbidden(self.id)

    def local(self) -> LocalSession | None:
        return self.server.local(self.id) if self.server is not None else None

    async def emit(self, event: str, payload: dict[str, Any]) -> Receipt:
        """Send a client event through the session's log and channel; SessionNotFound if expired.

        Every event takes the same path, even on the replica holding the socket, so events keep
        their order and a reload or a replica crash cannot lose a durable one.
        """
        if event.startswith(CONTROL_PREFIX):
            raise ValueError(f"event names starting with {CONTROL_PREFIX!r} are reserved")
        envelope = Envelope(Target.session(self.id), event, payload, self.bus.settings.replica_id)
        return await self.bus.send(envelope, durable=event not in UNLOGGED_EVENTS)
