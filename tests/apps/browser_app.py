"""A parent app for the chat page tests: CHAT_PATH chooses where the chat is mounted, ROOT_PATH sets
`app.root_path` (as when a proxy publishes the app below that prefix)."""

import os
from pathlib import Path

from fastapi import FastAPI

from web import Message, init_ws_context, mount_app

app = FastAPI()
app.root_path = os.environ.get("ROOT_PATH", "")


@app.get("/app")
async def parent_route() -> dict[str, str]:
    return {"app": "parent"}


@app.get("/hello/{session_id}")
async def hello(session_id: str) -> dict[str, str]:
    await init_ws_context(session_id)
    await Message(content="Hello World").send()
    return {"sent": session_id}


mount_app(app, Path(__file__).with_name("chat.py"), path=os.environ.get("CHAT_PATH", "/chat"))
