"""An app whose chat module has login callbacks (tests/apps/login_chat.py); CHAT_PATH chooses the mount."""

import logging
import os
from pathlib import Path

from fastapi import Depends, FastAPI

from web import Message, User, authenticate_user, init_ws_context, mount_app, user_session

app = FastAPI()
logging.basicConfig(level=logging.WARNING)
logging.getLogger("switchboard").setLevel(logging.INFO)


@app.get("/me")
async def me(current_user: User = Depends(authenticate_user)) -> dict[str, object]:  # noqa: B008
    return current_user.to_dict()


@app.get("/say/{session_id}/{text}")
async def say(session_id: str, text: str) -> dict[str, object]:
    await init_ws_context(session_id)
    await Message(content=text).send()
    user = user_session.get("user")
    return {"user": user.to_dict() if user else None}


mount_app(app, Path(__file__).with_name("login_chat.py"), path=os.environ.get("CHAT_PATH", "/chat"))
