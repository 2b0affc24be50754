"""Sessions: the address of one chat socket, held by some replica, reachable from any process."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bus import Bus, Envelope, Target
from web.errors import SessionForbidden, SessionNotFound
from web.user import User

if TYPE_CHECKING:
    from web.server import ChatServer

log = logging.getLogger("switchboard.web")


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


@dataclass(frozen=True, slots=True)
class WebsocketSession:
    """A session by address. `emit` goes straight to the socket here, or over the bus."""

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

    async def emit(self, event: str, payload: dict[str, Any]) -> int:
        """Send a client event; returns how many sockets got it live. SessionNotFound if expired."""
        if self.server is not None and await self.server.emit_local(self.id, event, payload):
            return 1
        received = await self.bus.publish(
            Envelope(Target.session(self.id), event, payload, self.bus.settings.replica_id)
        )
        if received:
            return received
        if await self.bus.registry.get(self.id) is None:
            raise SessionNotFound(self.id)
        log.info("session %s is disconnected; %s not delivered", self.id, event)
        return 0
