"""The Chainlit app of bench/chainlit_bridge.py: tests/apps/chainlit's chat module and one timing
route, with the bridge on when BENCH_CHAINLIT_BRIDGE=1 (plain Chainlit otherwise).

Served with the cwd tests/apps/chainlit (Chainlit's config) and the project root on PYTHONPATH.
"""

import os
import time
from pathlib import Path

import chainlit as cl
from chainlit.context import init_ws_context
from chainlit.session import WebsocketSession
from chainlit.utils import mount_chainlit
from fastapi import FastAPI, HTTPException

APP_DIR = Path(__file__).resolve().parent.parent / "tests" / "apps" / "chainlit"

app = FastAPI()


@app.get("/bench/{session_id}")
async def bench(session_id: str, n: int = 1000) -> dict[str, float | int]:
    """Time n `cl.Message(...).send()` to the session from this process."""
    ws_session = WebsocketSession.get_by_id(session_id=session_id)
    if ws_session is None:
        raise HTTPException(404, "session not found here (plain Chainlit sees only its own)")
    init_ws_context(ws_session)
    start = time.perf_counter()
    for i in range(n):
        await cl.Message(content=f"bench {i}").send()
    return {"seconds": time.perf_counter() - start, "n": n, "pid": os.getpid()}


mount_chainlit(app=app, target=str(APP_DIR / "my_cl_app.py"), path="/chainlit")
if os.environ.get("BENCH_CHAINLIT_BRIDGE") == "1":
    from web.chainlit_bridge import enable_chainlit_bus

    enable_chainlit_bus(app)
