"""A worker that sends numbered rounds to many sessions: `python -m tests.apps.fanout SESSIONS_FILE [PACE]`.

Reads session ids (one per line), then sends `n=0`, `n=1`, ... to every one of them, round after round
(50 sends at a time, a round at most every PACE seconds: a load generator's rate, so a small machine is
not saturated), printing `round N` after each, until a line arrives on stdin. Every send must
return a receipt (delivered or queued); it prints one JSON line at the end:
{"rounds": R, "statuses": {"delivered": x, "queued": y, ...}}.
"""

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path

from workers import Client


async def main(path: str, pace: float) -> None:
    ids = Path(path).read_text().split()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.run_in_executor(None, sys.stdin.readline).add_done_callback(lambda _: stop.set())
    statuses: Counter[str] = Counter()
    gate = asyncio.Semaphore(50)
    rounds = 0
    async with Client() as client:

        async def send(session_id: str, text: str) -> None:
            async with gate:
                statuses[(await client.send_to_session(session_id, text)).status] += 1

        while not stop.is_set():
            began = loop.time()
            await asyncio.gather(*(send(session_id, f"n={rounds}") for session_id in ids))
            print(f"round {rounds}", flush=True)
            rounds += 1
            await asyncio.sleep(max(0.0, began + pace - loop.time()))
    print(json.dumps({"rounds": rounds, "statuses": statuses}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0))
