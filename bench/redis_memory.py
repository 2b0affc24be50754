"""Redis memory of a session and of its log: bytes per session record and per retained log entry.

    .venv/bin/python -m bench.redis_memory [--sessions 200] [--size 100]

Starts its own redis-server, registers `--sessions` sessions through the bus registry (as a replica
does: the record and the replica's session set) and reads INFO memory used_memory; then sends
1, 10, 100 and 1000 messages (`workers.Client().send_to_session`, `--size` characters of text) to
each and reads it again. Prints and writes bench/results/redis_memory-<UTC timestamp>.json.
The per-session figure here has no pub/sub subscription (bench/scale.py measures that, with sockets).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import secrets
from pathlib import Path
from typing import Any

from bench.redis_cost import start_redis

ROOT = Path(__file__).resolve().parent.parent


async def run(args: argparse.Namespace, port: int) -> dict[str, Any]:
    os.environ["SWITCHBOARD_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    import redis.asyncio as redis

    from bus import Envelope, Target
    from web.message import client_event
    from workers import Client

    admin = redis.Redis(port=port)

    async def used() -> int:
        return int((await admin.info("memory"))["used_memory"])

    text = "x" * args.size
    name, payload = client_event(text, "Assistant")
    envelope_bytes = len(Envelope(Target.session("a" * 22), name, payload, "replica-1").encode())
    base = await used()
    out: dict[str, Any] = {"envelope_bytes": envelope_bytes, "sessions": args.sessions}
    async with Client() as client:
        ids = [secrets.token_urlsafe(16) for _ in range(args.sessions)]
        for sid in ids:
            await client.bus.registry.create(sid, user=None, thread_id=None, resume_token="t" * 20)
        registered = await used()
        out["record_bytes_per_session"] = (registered - base) / args.sessions
        total, per_length = 0, {}
        for length in (1, 10, 100, 1000):
            for sid in ids:
                for _ in range(length - total):
                    await client.send_to_session(sid, text)
            total = length
            per_length[length] = (await used() - registered) / args.sessions
        out["log_bytes_per_session"] = per_length
        out["log_bytes_per_entry_at_1000"] = per_length[1000] / 1000
        out["log_fixed_bytes"] = per_length[1] - (per_length[1000] - per_length[1]) / 999
        out["log_bytes_per_entry_marginal"] = (per_length[1000] - per_length[1]) / 999
    await admin.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--size", type=int, default=100, help="characters of message text (100)")
    args = parser.parse_args()
    proc, port = start_redis()
    try:
        result = asyncio.run(run(args, port))
    finally:
        proc.terminate()
        proc.wait(10)
    result["utc"] = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = ROOT / "bench" / "results" / f"redis_memory-{result['utc']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
