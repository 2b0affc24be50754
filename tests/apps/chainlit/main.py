# The seed's four examples with the real Chainlit, verbatim, plus the bridge's one line
# (`enable_chainlit_bus(app)` next to `mount_chainlit`). Served from this directory with
# `uvicorn main:app` (Chainlit reads .chainlit/config.toml from here). The routes after the seed's
# are for the tests: asks, streams, steps/elements/actions/toasts, tokens, and the bench.
import os
import time

import chainlit as cl
from chainlit.auth import create_jwt, get_current_user
from chainlit.context import init_http_context, init_ws_context
from chainlit.session import WebsocketSession
from chainlit.user import User
from chainlit.utils import mount_chainlit
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse

from bus import get_settings
from web.chainlit_bridge import enable_chainlit_bus

app = FastAPI()


@app.get("/app")
def read_main():
    return {"message": "Hello World from main app"}


@app.get("/hello")
async def hello(request: Request):
    init_http_context()
    await cl.Message(content="Hello World").send()
    return HTMLResponse("Hello World")


@app.get("/hello/{session_id}")
async def hello(request: Request, session_id: str):
    ws_session = WebsocketSession.get_by_id(session_id=session_id)
    init_ws_context(ws_session)
    await cl.Message(content="Hello World").send()
    return "Data sent to the websocket client"


@app.get("/custom-auth")
async def custom_auth(current_user: User = Depends(get_current_user)):
    return {"message": f"Hello {current_user.identifier}"}


mount_chainlit(app=app, target="my_cl_app.py", path="/chainlit")
enable_chainlit_bus(app)


# -- for the tests -------------------------------------------------------------------------------


@app.middleware("http")
async def served_by(request: Request, call_next):
    response = await call_next(request)
    response.headers["X-Replica"] = get_settings().replica_id
    return response


@app.get("/token/{identifier}")
async def token(identifier: str):
    """A Chainlit token (the `access_token` cookie) for a test user, when login is on."""
    return {"token": create_jwt(User(identifier=identifier))}


@app.get("/ask/{session_id}")
async def ask(session_id: str, timeout: int = 30):
    init_ws_context(WebsocketSession.get_by_id(session_id))
    answer = await cl.AskUserMessage(content="What is your name?", timeout=timeout).send()
    return {"answer": answer["output"] if answer else None}


@app.get("/stream/{session_id}")
async def stream(session_id: str, n: int = 20):
    init_ws_context(WebsocketSession.get_by_id(session_id))
    message = cl.Message(content="")
    for i in range(n):
        await message.stream_token(f"t{i} ")
    await message.send()
    return {"id": message.id}


@app.get("/rich/{session_id}")
async def rich(session_id: str):
    init_ws_context(WebsocketSession.get_by_id(session_id))
    async with cl.Step(name="lookup", type="tool") as step:
        step.output = "looked it up"
    image = cl.Image(name="logo", url="https://example.invalid/logo.png", display="inline")
    actions = [cl.Action(name="approve", payload={"value": 1}, label="Approve")]
    message = cl.Message(content="rich", elements=[image], actions=actions)
    await message.send()
    await cl.context.emitter.send_toast("Saved", "success")
    return {"step": step.id, "message": message.id}


@app.get("/bench/{session_id}")
async def bench(session_id: str, n: int = 200):
    """Time n sends from this process, through whatever get_by_id gives here."""
    init_ws_context(WebsocketSession.get_by_id(session_id))
    start = time.perf_counter()
    for i in range(n):
        await cl.Message(content=f"bench {i}").send()
    return {"seconds": time.perf_counter() - start, "n": n, "pid": os.getpid()}
