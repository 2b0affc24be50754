"""The demo app: a FastAPI app with the chat mounted at /chat and a cross-process /hello endpoint."""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from web import Message, WebsocketSession, init_ws_context, mount_app

app = FastAPI(title="Switchboard demo")


@app.get("/", include_in_schema=False)
async def index() -> RedirectResponse:
    """The chat page is at /chat/."""
    return RedirectResponse("chat/")


@app.get("/hello/{session_id}")
async def hello(session_id: str) -> dict[str, str]:
    """Send "Hello World" to a session, whichever replica holds its socket."""
    ws_session = WebsocketSession.get_by_id(session_id=session_id)
    init_ws_context(ws_session)
    await Message(content="Hello World").send()
    return {"status": "sent", "sessionId": session_id}


mount_app(app, Path(__file__).with_name("chat.py"), path="/chat")
