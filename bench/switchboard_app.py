"""The Switchboard replica of bench/peers.py: the seed's websocket-context endpoint, as a POST.

`POST /send/{session_id}` with a `new_message` payload (bench/node/loadgen.js sends one, stamped with
its send time in metadata.t) sends it with `init_ws_context(session_id)` and `Message(...).send()`,
from whichever replica serves the request. The chat module has no hooks: the bench measures delivery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI

from web import Message, init_ws_context, mount_app

app = FastAPI()


@app.post("/send/{session_id}")
async def send(session_id: str, payload: dict[str, Any]) -> dict[str, str]:
    init_ws_context(session_id)
    message = Message(payload.get("output", ""), metadata=payload.get("metadata"))
    await message.send()
    return {"sent": session_id}


mount_app(app, Path(__file__).with_name("switchboard_chat.py"), path="/chat")
