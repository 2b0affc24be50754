"""A sending process, driven line by line on stdin; prints one JSON line per batch.

`python -m bench.publisher switchboard SESSION_ID`: `workers.Client().send_to_session(...)`, with the
SWITCHBOARD_ environment of the replicas.
`python -m bench.publisher socketio SID`: a write-only `socketio.AsyncRedisManager` emitter
(BENCH_SIO_REDIS_URL, BENCH_SIO_CHANNEL), python-socketio's documented way to emit from outside a server.

Commands: `send N K TAG` sends N messages with contents TAG0 .. TAG{N-1} from K concurrent tasks;
`quit` exits. It prints `ready` once connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import socketio

from bench.common import run, run_senders
from web.message import client_event
from workers import Client

Sender = Callable[[str], Awaitable[Any]]


@contextlib.asynccontextmanager
async def switchboard_sender(session_id: str) -> AsyncIterator[Sender]:
    async with Client() as client:

        async def send(content: str) -> Any:
            return await client.send_to_session(session_id, content)

        yield send


@contextlib.asynccontextmanager
async def socketio_sender(sid: str) -> AsyncIterator[Sender]:
    emitter = socketio.AsyncRedisManager(
        os.environ["BENCH_SIO_REDIS_URL"],
        channel=os.environ.get("BENCH_SIO_CHANNEL", "socketio"),
        write_only=True,
    )

    async def send(content: str) -> Any:
        return await emitter.emit("new_message", client_event(content)[1], to=sid)

    try:
        yield send
    finally:
        if emitter.redis is not None:
            await emitter.redis.aclose()


async def main(mode: str, target: str) -> None:
    opened = switchboard_sender(target) if mode == "switchboard" else socketio_sender(target)
    async with opened as send:
        print("ready", flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            command = line.split()
            if not command or command[0] == "quit":
                break
            n, k, tag = int(command[1]), int(command[2]), command[3]

            async def one(i: int, tag: str = tag) -> Any:
                return await send(f"{tag}{i}")

            result = await run_senders(n, k, one)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("switchboard", "socketio"):
        sys.exit(__doc__)
    run(main(sys.argv[1], sys.argv[2]))
