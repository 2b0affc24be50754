"""What the running task works on, for log lines: the envelope and the session it is for.

The bus sets both while a handler runs for a received envelope; the chat server sets the session while
a chat hook runs. `web/logs.py` puts them into JSON log lines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

envelope_id: ContextVar[str | None] = ContextVar("switchboard_envelope_id", default=None)
session_id: ContextVar[str | None] = ContextVar("switchboard_session_id", default=None)


@contextlib.contextmanager
def working_on(*, session: str | None = None, envelope: str | None = None) -> Iterator[None]:
    """Within the block, log lines of this task name `session` and `envelope` (when given)."""
    tokens = []
    if session is not None:
        tokens.append((session_id, session_id.set(session)))
    if envelope is not None:
        tokens.append((envelope_id, envelope_id.set(envelope)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
