"""Which bus and which chat server the calling code uses: the one place that binds them.

A chat server binds itself while it runs (`bind_server`); a worker binds a bus for the duration of a
block (`bind`). Sends, `WebsocketSession.get_by_id` and webhooks find both through `current()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bus import Bus, Settings, get_settings
from web.errors import ContextError

if TYPE_CHECKING:
    from web.local import LocalSession


class Server(Protocol):
    """What sends need from the chat server of this process."""

    bus: Bus

    def local(self, session_id: str) -> LocalSession | None:
        """The session if this process holds its socket."""
        ...

    def data_changed(self, session_id: str) -> None:
        """A custom `user_session` key changed: save it soon, so it follows the session."""
        ...


@dataclass(frozen=True, slots=True)
class Runtime:
    bus: Bus
    #: The chat server of this process, if it runs one on the calling event loop and uses `bus`.
    server: Server | None


#: The chat server of this process and the event loop it runs on (one per process).
_server: tuple[Server, asyncio.AbstractEventLoop] | None = None
#: A bus bound by a worker for the current task (`workers.session_context`).
_bus: ContextVar[Bus | None] = ContextVar("switchboard_bus", default=None)


def bind_server(server: Server) -> None:
    """Make `server` this process's chat server, on the running event loop."""
    global _server
    _server = (server, asyncio.get_running_loop())


def unbind_server(server: Server) -> None:
    global _server
    if _server is not None and _server[0] is server:
        _server = None


@contextlib.contextmanager
def bind(bus: Bus) -> Iterator[None]:
    """Within the block, sends in this task use `bus` (a worker without a chat server)."""
    reset = _bus.set(bus)
    try:
        yield
    finally:
        _bus.reset(reset)


def _local_server() -> Server | None:
    """This process's chat server if it runs on the calling thread's event loop."""
    if _server is None:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return _server[0] if _server[1] is loop else None


def current() -> Runtime:
    """The bus to use here, and the chat server that shares it; ContextError if there is none."""
    server = _local_server()
    if (bus := _bus.get()) is not None:
        return Runtime(bus, server if server is not None and server.bus is bus else None)
    if server is not None:
        return Runtime(server.bus, server)
    raise ContextError(
        "no bus here: mount the chat app with mount_app() and let the app start, "
        "or use `async with workers.session_context(session_id)` in a worker"
    )


def settings() -> Settings:
    """The settings in force here: the running chat server's, else the process's from the environment."""
    server = _local_server()
    return server.bus.settings if server is not None else get_settings()
