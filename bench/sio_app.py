"""A plain python-socketio server: the baseline (a) and, with a Redis URL, the AsyncRedisManager peer (d).

Served like a Switchboard replica (FastAPI, Socket.IO at /chat/ws/socket.io, websocket only):

- on connect it emits `session` {"sessionId": sid}, as Switchboard does, so one client serves both;
- `GET /emit/{sid}?n=N&k=K` emits N `new_message` events to `sid` in-process from K concurrent tasks
  (`await sio.emit(event, payload, to=sid)`) and returns the server-side times;
- `POST /send/{sid}` emits the JSON payload it is given as `new_message` to `sid` (through the manager,
  so the socket may be on another replica): the HTTP workload of bench/peers.py;
- `GET /stats` reports how many emits this process took off the Redis channel (d's fan-out cost).

Environment: BENCH_SIO_REDIS_URL (unset: the in-memory manager) and BENCH_SIO_CHANNEL.
"""

from __future__ import annotations

import os
from typing import Any

import socketio
from fastapi import FastAPI

from bench.common import run_senders
from web.message import client_event


class CountingRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """AsyncRedisManager that counts the emits it receives from other processes over Redis."""

    received = 0

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("host_id") != self.host_id:
            self.received += 1
        await super()._handle_emit(message)


_redis_url = os.environ.get("BENCH_SIO_REDIS_URL")
manager = (
    CountingRedisManager(_redis_url, channel=os.environ.get("BENCH_SIO_CHANNEL", "socketio"))
    if _redis_url
    else None
)
sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"], client_manager=manager)
app = FastAPI()
app.mount("/chat/ws/socket.io", socketio.ASGIApp(sio, socketio_path=None))
connected: set[str] = set()


async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    connected.add(sid)
    await sio.emit("session", {"sessionId": sid}, to=sid)


async def disconnect(sid: str, reason: Any = None) -> None:
    connected.discard(sid)


sio.on("connect", connect)
sio.on("disconnect", disconnect)


@app.get("/emit/{sid}")
async def emit(sid: str, n: int, k: int = 1, tag: str = "n=") -> dict[str, float]:
    """Emit `n` messages (the payload a worker's send_to_session builds) to `sid`, in this process."""

    async def send(i: int) -> None:
        await sio.emit("new_message", client_event(f"{tag}{i}")[1], to=sid)

    return await run_senders(n, k, send)


@app.post("/send/{sid}")
async def send(sid: str, payload: dict[str, Any]) -> dict[str, bool]:
    await sio.emit("new_message", payload, to=sid)
    return {"sent": True}


@app.get("/stats")
async def stats() -> dict[str, int]:
    return {"received": manager.received if manager is not None else 0, "sockets": len(connected)}
