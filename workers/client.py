"""Worker-side sending: the same bus configuration as the web replicas, no socket server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bus import Bus, Settings
from web.context import Context, _worker_bus, current_bus, init_ws_context
from web.errors import ContextError
from web.message import Message


@contextlib.asynccontextmanager
async def session_context(session_id: str, *, settings: Settings | None = None) -> AsyncIterator[Context]:
    """`async with session_context(id): await Message(...).send()` from any asyncio code.

    Uses this process's chat server bus when it runs one; otherwise connects for the duration.
    Raises SessionNotFound on entry if the session does not exist.
    """
    async with contextlib.AsyncExitStack() as stack:
        bus = _worker_bus.get()
        if bus is None:
            try:
                bus = current_bus()[0] if settings is None else None
            except ContextError:
                bus = None
            if bus is None:
                bus = await stack.enter_async_context(Bus(settings))
        reset = _worker_bus.set(bus)
        stack.callback(_worker_bus.reset, reset)
        yield await init_ws_context(session_id)


def send_message(
    session_id: str,
    content: str,
    author: str = "Assistant",
    *,
    settings: Settings | None = None,
) -> None:
    """Synchronous send for threads, Celery/RQ tasks and scripts (not for async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("send_message() blocks; in async code use `async with session_context(...)`")

    async def send() -> None:
        async with session_context(session_id, settings=settings):
            await Message(content, author).send()

    asyncio.run(send())
