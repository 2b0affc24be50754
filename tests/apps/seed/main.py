# The seed's four examples (Chainlit's documented FastAPI integration), verbatim but for the imports:
# each import line names the Chainlit import it replaces. Served from this directory with
# `uvicorn main:app`, so `target="my_cl_app.py"` is found as in the docs.
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse

import web as cl  # import chainlit as cl
from web import User, authenticate_user  # from chainlit.user import User; chainlit's auth dependency
from web import WebsocketSession  # from chainlit.session import WebsocketSession

# from chainlit.context import init_http_context, init_ws_context
from web import init_http_context, init_ws_context
from web import mount_app as mount_chainlit  # from chainlit.utils import mount_chainlit

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
async def custom_auth(current_user: User = Depends(authenticate_user)):
    return {"message": f"Hello {current_user.identifier}"}


mount_chainlit(app=app, target="my_cl_app.py", path="/chainlit")
