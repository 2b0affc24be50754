"""A real Chainlit app's sessions, reached from a worker: `async with chainlit_context(id): ...`.

Needs the `chainlit` extra; Chainlit (and the bridge, web/chainlit_bridge.py) load on first use, so
`import workers` stays light. Run the worker from the Chainlit app's directory (or set
CHAINLIT_APP_ROOT): importing Chainlit reads, and creates if missing, `.chainlit/config.toml` there.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from bus import Settings


@contextlib.asynccontextmanager
async def chainlit_context(session_id: str, *, settings: Settings | None = None) -> AsyncIterator[Any]:
    """`async with chainlit_context(id): await cl.Message("Done").send()` from any asyncio code.

    Sets Chainlit's own websocket context for the session, whichever process holds its socket:
    `cl.Message`, `stream_token`, `cl.Step`, elements, toasts and `cl.AskUserMessage` work in it.
    Raises SessionNotFound on entry if the session is unknown or expired. Yields Chainlit's context.
    """
    from web.chainlit_bridge import session_context

    async with session_context(session_id, settings=settings) as ctx:
        yield ctx
