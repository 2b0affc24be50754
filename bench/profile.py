"""Where the CPU goes when Switchboard delivers: a pyinstrument profile of the sending process and of
the replica that holds the socket, for row b of bench/README.md (one sender, k = 1).

    .venv/bin/python -m bench.profile             # from the project root; N = 10,000, about 30 s
    .venv/bin/python -m bench.profile --n 20000

It starts its own redis-server and one replica (`tests.apps.app:app` under uvicorn, run by
`python -m pyinstrument`), connects a python-socketio client in this process, runs the publisher
(`workers.Client().send_to_session`, as bench/publisher.py does) under pyinstrument in a second
process, waits until the client has all N messages, and stops everything. It prints, for each
profiled process, the wall-clock microseconds per message spent in each group of functions that
bench/README.md names, and writes both full profiles as HTML and text to
bench/results/profile-<UTC timestamp>-{publisher,replica}.{html,txt} (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import socketio

from tests.harness import ROOT, Process, free_port, start_redis

RESULTS = ROOT / "bench" / "results"

#: The groups bench/README.md quotes: (label, patterns). A pattern is matched against
#: "<function> <file name>" of each frame; a group's time is the time of its first matching frames'
#: subtrees (nested matches are not counted twice).
GROUPS: dict[str, list[tuple[str, list[str]]]] = {
    "publisher": [
        ("Client.send_to_session, all of it", ["send_to_session client.py"]),
        (
            "  Message/client_event and Envelope.encode",
            [
                "send_to_session client.py > client_event message.py",
                "send_to_session client.py > encode envelope.py",
            ],
        ),
        # The multiplexed connection (bus/multiplex.py) writes and reads outside the send's own stack:
        # a loop callback packs the turn's commands into one write, a reader task takes the replies.
        (
            "Multiplexed: packing and writing the EVALSHA (its own callback and task)",
            ["_write_soon multiplex.py", "send_packed_command connection.py"],
        ),
        ("Multiplexed._read: redis-py reading the replies", ["_read multiplex.py"]),
        ("waiting in epoll (idle)", ["select selectors.py"]),
    ],
    "replica": [
        ("Bus._receive: one envelope, decode to emit", ["_receive core.py"]),
        ("  Envelope.decode with its payload checks", ["_receive core.py > decode envelope.py"]),
        ("  python-socketio emit (packet, JSON)", ["_receive core.py > emit async_server.py"]),
        (
            "the Redis subscription read (redis-py read_response)",
            ["_receive_until_lost redis_backend.py > read_response"],
        ),
        (
            "websocket writes (engine.io/uvicorn send)",
            [
                "send websockets_sansio_impl.py",
                "send wsproto_impl.py",
                "send websockets_impl.py",
                "send async_socket.py",
            ],
        ),
    ],
}


def per_message(profile: Path, groups: list[tuple[str, list[str]]], n: int) -> list[tuple[str, float]]:
    """Per group: wall-clock microseconds per message spent in it (pyinstrument samples)."""
    from pyinstrument.session import Session

    root = Session.load(str(profile)).root_frame()

    def matched(frame: Any, patterns: list[str]) -> float:
        text = f"{frame.function} {Path(frame.file_path or '').name}"
        for pattern in patterns:
            outer, _, inner = pattern.partition(" > ")  # "A > B": B's time within A's subtrees only
            if outer in text:
                return matched_inside(frame, inner) if inner else float(frame.time)
        return sum(matched(child, patterns) for child in frame.children)

    def matched_inside(frame: Any, pattern: str) -> float:
        return sum(matched(child, [pattern]) for child in frame.children)

    return [(label, 1e6 * matched(root, patterns) / n if root else 0.0) for label, patterns in groups]


def pyinstrument_args(out: Path) -> list[str]:
    return [sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(out)]


async def publish(session_id: str, n: int) -> None:
    from workers import Client

    async with Client() as client:
        for i in range(n):
            await client.send_to_session(session_id, f"p{i}")


async def profile(n: int) -> dict[str, Any]:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS.mkdir(exist_ok=True)
    redis, redis_port = start_redis()
    env = {
        "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SWITCHBOARD_KEY_PREFIX": "profile",
        "CHAT_PATH": "/chat",
    }
    port = free_port()
    replica_out = RESULTS / f"profile-{stamp}-replica.pyisession"
    uvicorn = ["-m", "uvicorn", "tests.apps.app:app", "--host", "127.0.0.1", "--port", str(port)]
    replica = Process([*pyinstrument_args(replica_out), *uvicorn], env=env, name="replica")
    publisher: Process | None = None
    client = socketio.AsyncClient(reconnection=False)
    try:
        await asyncio.to_thread(replica.wait_for_line, "Uvicorn running on")
        got: list[str] = []
        done, session = asyncio.Event(), asyncio.get_running_loop().create_future()

        @client.on("session")
        async def on_session(data: dict[str, str]) -> None:
            session.set_result(data["sessionId"])

        @client.on("new_message")
        async def on_message(data: dict[str, Any]) -> None:
            got.append(data["output"])
            if len(got) == n:
                done.set()

        url = f"http://127.0.0.1:{port}"
        await client.connect(
            url, socketio_path="/chat/ws/socket.io", transports=["websocket"], wait_timeout=10
        )
        session_id = await asyncio.wait_for(session, 10)
        publisher_out = RESULTS / f"profile-{stamp}-publisher.pyisession"
        args = [
            *pyinstrument_args(publisher_out),
            "-m",
            "bench.profile",
            "--publish",
            session_id,
            "--n",
            str(n),
        ]
        started = time.monotonic()
        publisher = Process(args, env=env, name="publisher")
        await asyncio.wait_for(done.wait(), 600)
        elapsed = time.monotonic() - started
        await publisher.finished(60)
        assert got == [f"p{i}" for i in range(n)], "messages lost or out of order"
    finally:
        if client.connected:
            await client.disconnect()
        replica.proc.send_signal(signal.SIGINT)  # uvicorn exits cleanly; pyinstrument then saves
        await asyncio.to_thread(replica.proc.wait, 60)
        if publisher is not None:
            publisher.stop()
        redis.stop()
    report: dict[str, Any] = {"n": n, "seconds": round(elapsed, 2), "profiles": {}}
    for name, path in (("publisher", publisher_out), ("replica", replica_out)):
        for renderer, ext in (("html", "html"), ("text", "txt")):
            target = path.with_suffix(f".{ext}")
            args = [sys.executable, "-m", "pyinstrument", f"--load={path}", "-r", renderer, "-o", str(target)]
            await asyncio.to_thread(subprocess.run, args, check=True)
        report["profiles"][name] = {label: round(us, 1) for label, us in per_message(path, GROUPS[name], n)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="messages to send (default 10,000)")
    parser.add_argument("--publish", metavar="SESSION_ID", help=argparse.SUPPRESS)  # the publisher process
    args = parser.parse_args()
    if args.publish:
        asyncio.run(publish(args.publish, args.n))
        return
    report = asyncio.run(profile(args.n))
    print(f"{report['n']} messages in {report['seconds']} s; wall-clock us per message, by function:")
    for name, groups in report["profiles"].items():
        print(f"\n{name}:")
        for label, us in groups.items():
            print(f"  {us:7.1f} us  {label}")
    print(json.dumps(report))
    print(f"\nfull profiles: {RESULTS}/profile-*.html and .txt")


if __name__ == "__main__":
    main()
