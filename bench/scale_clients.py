"""One client process of bench/scale.py: holds many idle python-socketio sockets.

`python -m bench.scale_clients --count N --urls URL[,URL] --path /chat/ws/socket.io --out FILE`
connects N AsyncClients (websocket transport; the i-th to URLs[i % len]), at most `--concurrency` at a
time, writes their session ids to FILE (one a line) and prints `READY {json}`. Then it obeys lines on
stdin: `report` prints `REPORT {json}` (new_message events received and when, CLOCK_MONOTONIC),
`quit` disconnects every socket and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from typing import Any

import aiohttp
import socketio

from bench.common import now


def raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def main(args: argparse.Namespace) -> None:
    urls = args.urls.split(",")
    # One HTTP session for all sockets of this process (no per-socket connector), no connection cap.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    clients: list[socketio.AsyncClient] = []
    sessions: list[str] = []
    arrivals: list[float] = []
    failed = 0
    disconnects: Counter[str] = Counter()
    gate = asyncio.Semaphore(args.concurrency)

    async def open_one(i: int) -> None:
        nonlocal failed
        sio = socketio.AsyncClient(reconnection=False, http_session=http, handle_sigint=False)
        got = asyncio.get_running_loop().create_future()

        @sio.on("session")
        async def on_session(data: Any) -> None:
            if not got.done():
                got.set_result(data["sessionId"])

        @sio.on("new_message")
        async def on_message(data: Any) -> None:
            arrivals.append(now())

        @sio.event
        async def disconnect(reason: Any = None) -> None:
            disconnects[str(reason)] += 1

        async with gate:
            for attempt in range(3):
                try:
                    await sio.connect(
                        urls[i % len(urls)],
                        socketio_path=args.path,
                        transports=["websocket"],
                        wait_timeout=60,
                    )
                    sessions.append(await asyncio.wait_for(got, 60))
                    clients.append(sio)
                    if len(clients) % 500 == 0:
                        print(f"connected {len(clients)}", flush=True)
                    return
                except Exception as exc:
                    await sio.disconnect()
                    if attempt == 2:
                        failed += 1
                        print(f"connect failed: {exc!r}", file=sys.stderr, flush=True)
                    await asyncio.sleep(1 + attempt)

    started = now()
    await asyncio.gather(*(open_one(i) for i in range(args.count)))
    elapsed = now() - started
    with open(args.out, "w") as out:  # noqa: ASYNC230  # once, before any measurement
        out.write("\n".join(sessions) + "\n")
    ready = {"connected": len(clients), "failed": failed, "seconds": elapsed, "nofile": args.nofile}
    print("READY " + json.dumps(ready), flush=True)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while line := (await reader.readline()).decode().strip():
        if line == "report":
            connected = sum(1 for c in clients if c.connected)
            report = {"received": len(arrivals), "connected": connected, "disconnects": disconnects}
            if arrivals:
                report.update(first=min(arrivals), last=max(arrivals))
            print("REPORT " + json.dumps(report), flush=True)
        elif line == "quit":
            break
    t = time.monotonic()
    for i in range(0, len(clients), 200):
        await asyncio.gather(*(c.disconnect() for c in clients[i : i + 200]), return_exceptions=True)
    await http.close()
    print(f"BYE {time.monotonic() - t:.1f}s", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--urls", required=True)
    parser.add_argument("--path", default="/chat/ws/socket.io")
    parser.add_argument("--out", required=True)
    parser.add_argument("--concurrency", type=int, default=10)
    parsed = parser.parse_args()
    parsed.nofile = raise_file_limit()
    asyncio.run(main(parsed))
