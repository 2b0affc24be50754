"""Worker-side sending: the same bus configuration as the web replicas, no socket server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from bus import Bus, Envelope, Receipt, Settings, Target
from web import runtime
from web.context import Context, init_ws_context
from web.errors import ContextError
from web.message import client_event
from web.protocol import check_custom_event

T = TypeVar("T")


@contextlib.asynccontextmanager
async def session_context(session_id: str, *, settings: Settings | None = None) -> AsyncIterator[Context]:
    """`async with session_context(id): await Message(...).send()` from any asyncio code.

    Uses this process's chat server bus when it runs one; otherwise connects for the duration.
    Raises SessionNotFound on entry if the session does not exist.
    """
    bus = None
    if settings is None:
        with contextlib.suppress(ContextError):
            bus = runtime.current().bus
    if bus is not None:
        async with _bound(bus, session_id) as ctx:
            yield ctx
    else:
        async with Client(settings) as client, client.session(session_id) as ctx:
            yield ctx


@contextlib.asynccontextmanager
async def _bound(bus: Bus, session_id: str) -> AsyncIterator[Context]:
    """The websocket context of one session, with `bus` as the bus its sends take."""
    with runtime.bind(bus):
        yield await init_ws_context(session_id)


class Client:
    """An asyncio client for workers: one bus connection for many sends.

    `async with Client() as client: receipt = await client.send_to_user("ann", "Done")`.
    Every send returns a Receipt; an unreachable Redis raises BusUnavailable after bounded
    retries and an unknown session raises SessionNotFound: nothing is dropped silently.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.bus = Bus(settings)

    async def __aenter__(self) -> Client:
        await self.bus.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.bus.__aexit__(exc_type, exc, tb)

    async def send_to_session(self, session_id: str, content: str, **options: Any) -> Receipt:
        """A message (or, with `event=`, a custom event) to one session; durable (see docs/delivery.md)."""
        return await self._send(Target.session(session_id), content, **options)

    async def send_to_user(self, identifier: str, content: str, **options: Any) -> Receipt:
        """To every live session of one user, on every replica (live only)."""
        return await self._send(Target("user", identifier), content, **options)

    async def broadcast(self, content: str, **options: Any) -> Receipt:
        """To every live session on every replica (live only)."""
        return await self._send(Target("broadcast"), content, **options)

    @contextlib.asynccontextmanager
    async def session(self, session_id: str) -> AsyncIterator[Context]:
        """The websocket context of one session on this client's connection (Message, AskUserMessage)."""
        async with _bound(self.bus, session_id) as ctx:
            yield ctx

    async def _send(
        self,
        target: Target,
        content: str,
        *,
        author: str = "Assistant",
        event: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Receipt:
        if event is not None:
            check_custom_event(event)
        name, payload = client_event(content, author, event=event, metadata=metadata)
        return await self.bus.send(Envelope(target, name, payload, self.bus.settings.replica_id))


class SyncClient:
    """The blocking counterpart of Client for threads, Celery/RQ tasks and scripts.

    Keeps one bus connection on a private event loop thread; `close()` (or `with`) ends it.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="switchboard-client", daemon=True)
        self._thread.start()
        self._client = Client(settings)
        try:
            self._call(self._client.__aenter__())
        except BaseException:
            self._stop()
            raise

    def send_to_session(self, session_id: str, content: str, **options: Any) -> Receipt:
        return self._call(self._client.send_to_session(session_id, content, **options))

    def send_to_user(self, identifier: str, content: str, **options: Any) -> Receipt:
        return self._call(self._client.send_to_user(identifier, content, **options))

    def broadcast(self, content: str, **options: Any) -> Receipt:
        return self._call(self._client.broadcast(content, **options))

    def close(self) -> None:
        try:
            self._call(self._client.__aexit__(None, None, None))
        finally:
            self._stop()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def send_message(
    session_id: str, content: str, author: str = "Assistant", *, settings: Settings | None = None
) -> Receipt:
    """One synchronous send for threads and scripts (not for async code); returns the receipt."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("send_message() blocks; in async code use `async with session_context(...)`")

    async def send() -> Receipt:
        async with Client(settings) as client:
            return await client.send_to_session(session_id, content, author=author)

    return asyncio.run(send())
