"""Running the chat module's hooks in a session's websocket context, on the replica holding it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bus import BusUnavailable, trace
from web.callbacks import Hook, hooks
from web.context import init_ws_context
from web.local import LocalSession
from web.message import Message
from web.session import WebsocketSession

log = logging.getLogger("switchboard.web")


async def run_hook(local: LocalSession, hook: Hook, running: set[asyncio.Task[Any]], *args: Any) -> None:
    """Run `hook(*args)` between task_start and task_end; a failure shows the user an error message.

    The task running it joins `running` while it lives (a drain lets those finish or cancels them).
    """
    ctx = init_ws_context(WebsocketSession(local.id, local.user, local.thread_id))
    trace.session_id.set(local.id)  # in this task: its log lines name the session
    if (task := asyncio.current_task()) is not None and task not in running:
        running.add(task)
        task.add_done_callback(running.discard)
    await ctx.emit("task_start", {})
    try:
        await hook(*args)
    except BusUnavailable as exc:  # not a bug of the hook: nothing more can be sent now either
        log.warning("chat hook %s of session %s stopped: %s", hook.__name__, local.id, exc)
        return
    except Exception:
        log.exception("chat hook %s failed for session %s", hook.__name__, local.id)
        await Message("An internal error occurred.", is_error=True).send()
    await ctx.emit("task_end", {})


async def end_hook(local: LocalSession) -> None:
    """Run on_chat_end for a session whose grace period passed."""
    if hooks.chat_end is not None:
        init_ws_context(WebsocketSession(local.id, local.user, local.thread_id))
        try:
            await hooks.chat_end()
        except Exception:
            log.exception("on_chat_end failed for session %s", local.id)
