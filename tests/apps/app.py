"""The seed examples as one FastAPI app; CHAT_PATH chooses where the chat is mounted."""

import logging
import os
from pathlib import Path

from fastapi import Depends, FastAPI

from tests.apps import counters
from web import (
    AskUserMessage,
    Message,
    SessionDataUnavailable,
    User,
    WebsocketSession,
    authenticate_user,
    init_http_context,
    init_ws_context,
    mount_app,
    user_session,
    webhook_router,
)

app = FastAPI()
# The tests wait for the runtime's log lines (e.g. "session ... detached") as events.
logging.basicConfig(level=logging.WARNING)
logging.getLogger("switchboard").setLevel(logging.INFO)


@app.get("/")
async def parent_route() -> dict[str, str]:
    return {"app": "parent"}


@app.get("/hello/{session_id}")
async def hello(session_id: str) -> dict[str, str]:
    """Seed example 3: the websocket context, from whichever replica serves the request."""
    ws_session = await WebsocketSession.get_by_id(session_id)
    await init_ws_context(ws_session)
    await Message(content="Hello World").send()
    return {"sent": session_id}


@app.get("/say/{session_id}/{text}")
async def say(session_id: str, text: str) -> dict[str, object]:
    await init_ws_context(session_id)
    message = await Message(content=text).send()
    return {"id": message.id, "user": user_session.get("user"), "thread": user_session.get("thread_id")}


@app.get("/edit/{session_id}")
async def edit(session_id: str) -> dict[str, str]:
    """Send, update, then remove one message, from whichever replica serves the request."""
    await init_ws_context(session_id)
    message = await Message(content="draft").send()
    message.content = "final"
    await message.update()
    await message.remove()
    return {"id": message.id}


@app.get("/http-hello")
async def http_hello() -> dict[str, bool]:
    """Seed example 2: the HTTP context; the send succeeds and reaches no socket."""
    init_http_context()
    await Message(content="Hello from HTTP").send()
    return {"sent": True}


@app.get("/http-thread/{thread_id}/{text}")
async def http_thread(thread_id: str, text: str) -> dict[str, bool]:
    """Seed example 2 with data persistence: the send is stored in the given thread."""
    init_http_context(thread_id=thread_id)
    await Message(content=text).send()
    return {"sent": True}


@app.get("/http-thread-as/{thread_id}/{text}")
async def http_thread_as(
    thread_id: str,
    text: str,
    current_user: User = Depends(authenticate_user),  # noqa: B008
) -> dict[str, bool]:
    init_http_context(user=current_user, thread_id=thread_id)
    await Message(content=text).send()
    return {"sent": True}


@app.get("/custom/{session_id}")
async def custom_key(session_id: str) -> dict[str, object]:
    await init_ws_context(session_id)
    try:
        return {"count": user_session.get("count"), "error": None}
    except SessionDataUnavailable as exc:
        return {"count": None, "error": str(exc)}


@app.get("/custom-auth")
async def custom_auth(current_user: User = Depends(authenticate_user)) -> dict[str, str]:  # noqa: B008
    """Seed example 4: an endpoint protected by the same token as the chat socket."""
    init_http_context(user=current_user)
    await Message(content=f"Hello {current_user.identifier}").send()
    return {"identifier": current_user.identifier}


@app.get("/hello-as/{session_id}")
async def hello_as(session_id: str, current_user: User = Depends(authenticate_user)) -> dict[str, str]:  # noqa: B008
    """Cross-process send on behalf of a user: only to that user's own sessions (else 403)."""
    await init_ws_context(session_id, user=current_user)
    await Message(content=f"Hello from {current_user.identifier}").send()
    return {"sent": session_id}


@app.get("/hello-as-plain/{session_id}")
async def hello_as_plain(session_id: str, current_user: User = Depends(authenticate_user)) -> dict[str, str]:  # noqa: B008
    """The same, called plainly as in Chainlit: the session and the user are checked at the send."""
    init_ws_context(session_id, user=current_user)
    await Message(content=f"Hello from {current_user.identifier}").send()
    return {"sent": session_id}


@app.get("/count-as-plain/{session_id}")
async def count_as_plain(
    session_id: str,
    current_user: User = Depends(authenticate_user),  # noqa: B008
) -> dict[str, object]:
    """A session's custom key on behalf of a user, called plainly: only the user's own session."""
    init_ws_context(session_id, user=current_user)
    try:
        count = user_session.get("count")
    except SessionDataUnavailable:
        return {"count": None, "held": False}
    user_session.set("count", (count or 0) + 1000)
    return {"count": count, "held": True}


@app.get("/ask/{session_id}")
async def ask(session_id: str, timeout: float = 10) -> dict[str, object]:
    """Ask the session's user a question from whichever replica serves the request."""
    await init_ws_context(session_id)
    return {"answer": await AskUserMessage("Your name?", timeout=timeout).send()}


@app.get("/stats")
async def stats() -> dict[str, object]:
    return {
        "chat_starts": counters.chat_starts,
        "chat_ends": counters.chat_ends,
        "sessions": len(server.sessions.by_id),
        "replica": server.settings.replica_id,
        "received": server.bus.stats.received,
        "reconnects": server.bus.reconnects,
        "refused": dict(server.limits.refused),
    }


app.include_router(webhook_router(prefix="/hooks"))
chat_module = Path(__file__).with_name(os.environ.get("CHAT_MODULE", "chat.py"))
server = mount_app(app, chat_module, path=os.environ.get("CHAT_PATH", "/chat"))
