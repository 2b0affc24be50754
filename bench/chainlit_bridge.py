"""Cost per message of the Chainlit bridge, against plain Chainlit in one process.

    .venv/bin/python -m bench.chainlit_bridge [--n 1000] [--repeat 3]

Starts its own redis-server and three uvicorn processes of bench/chainlit_app.py (plain Chainlit; the
bridge on replica A; the bridge on replica B), connects one python-socketio client speaking Chainlit's
handshake to the plain process and one to A, and times `GET /bench/{session_id}?n=N`: N
`cl.Message(...).send()` in one endpoint, sequentially, measured inside the endpoint (send) and from
the request to the client having the N-th message (e2e). Rows: plain Chainlit on the process holding
the socket; the bridge on the process holding it (Chainlit's own emit, through the patched get_by_id);
the bridge on the other replica (a RemoteSession: one Redis round trip per message). Best of --repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

import httpx
import socketio

from bench.common import now
from tests.harness import ROOT, Replica, start_redis, start_replica

APP_DIR = ROOT / "tests" / "apps" / "chainlit"


class Receiver:
    """A Chainlit-handshake client that counts `new_message` events starting with "bench "."""

    def __init__(self) -> None:
        self.session_id = str(uuid.uuid4())
        self.sio = socketio.AsyncClient(reconnection=False)
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()
        self.greeted = asyncio.Event()
        self.sio.on("new_message", self._on_message)

    async def _on_message(self, data: dict[str, Any]) -> None:
        output = str(data.get("output", ""))
        if output.startswith("Hello from session"):
            self.greeted.set()
        elif output.startswith("bench "):
            self.count += 1
            if self.count >= self.target:
                self.done.set()

    async def connect(self, replica: Replica) -> Receiver:
        auth = {"clientType": "webapp", "sessionId": self.session_id, "userEnv": "{}", "chatProfile": None}
        await self.sio.connect(
            replica.url, socketio_path=replica.socketio_path, transports=["websocket"], auth=auth
        )
        await self.sio.emit("connection_successful")
        await asyncio.wait_for(self.greeted.wait(), 10)
        return self

    def expect(self, n: int) -> None:
        self.count, self.target = 0, n
        self.done.clear()


async def measure(sender: Replica, receiver: Receiver, n: int, repeat: int) -> dict[str, float]:
    best: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=sender.url, timeout=300) as http:
        for _ in range(repeat + 1):  # the first round warms up
            receiver.expect(n)
            start = now()
            response = await http.get(f"/bench/{receiver.session_id}", params={"n": n})
            response.raise_for_status()
            await asyncio.wait_for(receiver.done.wait(), 120)
            e2e = now() - start
            send = float(response.json()["seconds"])
            if not best or e2e < best["e2e"]:
                best = {"send": send, "e2e": e2e}
    return best


async def main(n: int, repeat: int) -> None:
    redis, port = start_redis()
    env = {
        "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "SWITCHBOARD_KEY_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
        "PYTHONPATH": str(ROOT),
    }
    app = "bench.chainlit_app:app"
    started: list[Replica] = []
    receivers: list[Receiver] = []
    try:
        plain = start_replica(env, app=app, path="/chainlit", cwd=APP_DIR, name="plain")
        started.append(plain)
        bridged = {**env, "BENCH_CHAINLIT_BRIDGE": "1"}
        a = start_replica(bridged, app=app, path="/chainlit", cwd=APP_DIR, name="bridge-a")
        started.append(a)
        b = start_replica(bridged, app=app, path="/chainlit", cwd=APP_DIR, name="bridge-b")
        started.append(b)
        on_plain = await Receiver().connect(plain)
        on_a = await Receiver().connect(a)
        receivers += [on_plain, on_a]
        rows = [
            ("plain Chainlit, holder", await measure(plain, on_plain, n, repeat)),
            ("bridge, holder (local emit)", await measure(a, on_a, n, repeat)),
            ("bridge, other replica (bus)", await measure(b, on_a, n, repeat)),
        ]
    finally:
        for receiver in receivers:
            await receiver.sio.disconnect()
        for replica in started:
            replica.process.stop()
        redis.stop()
    base = rows[0][1]
    print(f"N={n} sequential cl.Message(...).send() in one endpoint, best of {repeat}")
    print(f"{'row':32} {'send us/msg':>12} {'x plain':>8} {'e2e us/msg':>11} {'x plain':>8}")
    for name, row in rows:
        print(
            f"{name:32} {row['send'] / n * 1e6:12.1f} {row['send'] / base['send']:8.2f} "
            f"{row['e2e'] / n * 1e6:11.1f} {row['e2e'] / base['e2e']:8.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.repeat))
    sys.exit(0)
