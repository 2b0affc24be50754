"""Delivery throughput: plain python-socketio vs Switchboard's cross-process path, in one run.

`.venv/bin/python -m bench.delivery [--n 10000] [--k 8] [--repeat 3] [--no-peer]` from the project root.
Starts its own redis-server and uvicorn replicas on free loopback ports, stops them at the end, prints
a table and writes it as JSON to bench/results/<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import socketio

from bench.common import now, run
from tests.harness import Process, Replica, start_redis, start_replica

RESULTS = Path(__file__).resolve().parent / "results"
SIO_APP = "bench.sio_app:app"
SWITCHBOARD_APP = "tests.apps.app:app"

#: Sends a batch (n, k, tag) and returns the sender's timing dict (see bench.common.run_senders).
Batch = Callable[[int, int, str], Awaitable[dict[str, Any]]]


class Receiver:
    """A python-socketio client that counts `new_message` events and sets `done` at the expected count."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.session_id = ""
        self._session = asyncio.Event()
        self.expected = 0
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.seen: set[str] = set()
        #: Switchboard stamps a log offset on each message: count any that arrive out of order.
        self.last_offset = 0
        self.out_of_order = 0
        self.tag = ""
        self.stray = 0
        self.batches = 0
        self.done = asyncio.Event()
        self.sio.on("session", self._on_session)
        self.sio.on("new_message", self._on_message)

    async def _on_session(self, data: dict[str, Any]) -> None:
        self.session_id = data["sessionId"]
        self._session.set()

    async def _on_message(self, data: dict[str, Any]) -> None:
        t = now()
        if not data["output"].startswith(self.tag):
            self.stray += 1  # not from the current batch: never counted
            return
        if self.count == 0:
            self.first = t
        self.count += 1
        self.last = t
        self.seen.add(data["output"])
        if "offset" in data:
            offset = int(data["offset"].partition("-")[0])
            self.out_of_order += offset <= self.last_offset
            self.last_offset = max(offset, self.last_offset)
        if self.count == self.expected:
            self.done.set()

    def expect(self, n: int, tag: str) -> None:
        """Count the next n messages whose contents start with `tag`."""
        self.expected, self.count, self.first, self.last, self.tag = n, 0, 0.0, 0.0, tag
        self.seen = set()
        self.out_of_order = 0
        self.done = asyncio.Event()

    async def connect(self, replica: Replica) -> Receiver:
        await self.sio.connect(
            replica.url,
            socketio_path=replica.socketio_path,
            transports=["websocket"],
            wait_timeout=10,
        )
        await asyncio.wait_for(self._session.wait(), 10)
        return self

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    scenario: str,
    receiver: Receiver,
    batch: Batch,
    n: int,
    k: int,
    limit: float,
    roles: dict[str, int],
) -> dict[str, Any]:
    """Send one batch and wait (on an event, never by sleeping) until the client has all n.

    `roles` names the processes (pids) whose CPU time per message is reported; the client is this one.
    """
    receiver.batches += 1
    tag = f"{scenario.split()[0]}{k}-{receiver.batches}-"
    receiver.expect(n, tag)
    roles = {**roles, "client": os.getpid()}
    cpu = {role: cpu_seconds(pid) for role, pid in roles.items()}
    sent, _ = await asyncio.gather(batch(n, k, tag), asyncio.wait_for(receiver.done.wait(), limit))
    cpu = {role: cpu_seconds(pid) - cpu[role] for role, pid in roles.items()}
    span = receiver.last - receiver.first
    return {
        "scenario": scenario,
        "n": n,
        "k": k,
        "received": receiver.count,
        "all_distinct": len(receiver.seen) == n,
        "out_of_order": receiver.out_of_order if receiver.last_offset else None,
        "stray": receiver.stray,
        # Messages/s received by the client, first to last message.
        "client_rate": (n - 1) / span if span > 0 else 0.0,
        # Messages/s from the first send starting to the client having the last message.
        "e2e_rate": n / (receiver.last - sent["t_start"]),
        "send_rate": n / sent["elapsed"],
        "send_p50_us": sent["lat_p50_us"],
        "send_p99_us": sent["lat_p99_us"],
        # CPU microseconds per message of each process (10 ms clock ticks: about 1 us resolution).
        "cpu_us_per_msg": {role: round(seconds / n * 1e6, 1) for role, seconds in cpu.items()},
    }


async def series(
    scenario: str, receiver: Receiver, batch: Batch, args: argparse.Namespace, roles: dict[str, int]
) -> list[dict[str, Any]]:
    """A warm-up batch, then for k = 1 and k = K the best of `repeat` batches (by client rate)."""
    await measure("warmup", receiver, batch, args.warmup, 1, args.timeout, roles)
    rows = []
    for k in (1, args.k):
        runs = [
            await measure(scenario, receiver, batch, args.n, k, args.timeout, roles)
            for _ in range(args.repeat)
        ]
        rates = sorted(r["client_rate"] for r in runs)
        best = max(runs, key=lambda r: r["client_rate"])
        best["client_rates"] = rates
        best["client_rate_median"] = statistics.median(rates)
        best["out_of_order"] = None if best["out_of_order"] is None else sum(r["out_of_order"] for r in runs)
        best["all_distinct"] = all(r["all_distinct"] and r["received"] == r["n"] for r in runs)
        rows.append(best)
    return rows


def publisher_batch(publisher: Process, timeout: float) -> Batch:
    """Drive a bench.publisher process: one `send` command per batch, one JSON line back."""
    done = 0

    async def batch(n: int, k: int, tag: str) -> dict[str, Any]:
        nonlocal done
        done += 1
        publisher.tell(f"send {n} {k} {tag}")
        await asyncio.to_thread(publisher.wait_for_count, '"sent"', done, timeout)
        result: dict[str, Any] = publisher.last_json()
        return result

    return batch


async def publish_series(
    label: str,
    mode: str,
    receiver: Receiver,
    servers: tuple[Replica, Replica],
    env: dict[str, str],
    started: list[Process],
    args: argparse.Namespace,
    redis_pid: int,
) -> list[dict[str, Any]]:
    """Run `series` with a `bench.publisher MODE` process sending to `receiver`'s session.

    `servers` is (the replica holding the socket, the other one); the publisher is stopped after.
    """
    argv = [sys.executable, "-m", "bench.publisher", mode, receiver.session_id]
    publisher = Process(argv, env=env, name=f"{mode}-publisher", stdin=True)
    started.append(publisher)
    await asyncio.to_thread(publisher.wait_for_line, "ready")
    roles = {
        "redis": redis_pid,
        "server": servers[0].process.proc.pid,
        "other": servers[1].process.proc.pid,
        "publisher": publisher.proc.pid,
    }
    rows = await series(label, receiver, publisher_batch(publisher, args.timeout), args, roles)
    publisher.tell("quit")
    await publisher.finished(args.timeout)
    return rows


async def stats(replica: Replica) -> dict[str, Any]:
    response = await replica.aget("/stats")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


#: Output lines of our processes that suggest something went wrong (reported, at most 20 kept).
PROBLEM = re.compile(r"Traceback|Error|ERROR|WARNING|exception", re.IGNORECASE)
problems: list[str] = []


@contextlib.contextmanager
def processes() -> Iterator[list[Process]]:
    """Every process started in the block is stopped when it ends, whatever happens."""
    started: list[Process] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()
            found = [f"{proc.name}: {line}" for line in proc.lines if PROBLEM.search(line)]
            problems.extend(found[: 20 - len(problems)])


def replica(started: list[Process], env: dict[str, str], app: str, name: str) -> Replica:
    r = start_replica(env, app=app, name=name)
    started.append(r.process)
    return r


@contextlib.asynccontextmanager
async def clients(*replicas: Replica) -> AsyncIterator[list[Receiver]]:
    made: list[Receiver] = []
    try:
        for r in replicas:
            made.append(await Receiver().connect(r))
        yield made
    finally:
        for client in made:
            await client.close()


async def baseline(args: argparse.Namespace, scenario: str) -> list[dict[str, Any]]:
    """(a) python-socketio's in-process `await sio.emit(event, payload, to=sid)`, one server process."""
    with processes() as started:
        server = replica(started, {}, SIO_APP, "baseline")
        async with (
            clients(server) as (receiver,),
            httpx.AsyncClient(base_url=server.url, timeout=args.timeout) as http,
        ):

            async def batch(n: int, k: int, tag: str) -> dict[str, Any]:
                params: dict[str, Any] = {"n": n, "k": k, "tag": tag}
                response = await http.get(f"/emit/{receiver.session_id}", params=params)
                response.raise_for_status()
                result: dict[str, Any] = response.json()
                return result

            roles = {"server": server.process.proc.pid}
            return await series(scenario, receiver, batch, args, roles)


async def switchboard(
    args: argparse.Namespace, redis_url: str, redis_pid: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(b) workers.Client().send_to_session from a publisher process, socket on replica A;
    (c) replica B (holding another session) must receive none of those messages."""
    env = {"SWITCHBOARD_REDIS_URL": redis_url, "SWITCHBOARD_KEY_PREFIX": f"bench{uuid.uuid4().hex[:10]}"}
    with processes() as started:
        a = replica(started, env, SWITCHBOARD_APP, "replica-a")
        b = replica(started, env, SWITCHBOARD_APP, "replica-b")
        async with clients(a, b) as (receiver, _idle):
            before_a, before_b = await stats(a), await stats(b)
            rows = await publish_series(
                "b switchboard", "switchboard", receiver, (a, b), env, started, args, redis_pid
            )
            after_a, after_b = await stats(a), await stats(b)
    sent = args.warmup + len(rows) * args.repeat * args.n
    fanout = {
        "sent": sent,
        "a_received": after_a["received"] - before_a["received"],
        "b_received": after_b["received"] - before_b["received"],
        "b_sessions": after_b["sessions"],
    }
    fanout["ok"] = fanout["b_received"] == 0 and fanout["a_received"] == sent
    return rows, fanout


async def wait_subscribers(redis_url: str, channel: str, count: int, limit: float = 10.0) -> None:
    """Readiness of the AsyncRedisManager replicas: `count` subscribers on the channel."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        deadline = now() + limit
        while True:
            [(_, subscribers)] = await client.pubsub_numsub(channel)
            if subscribers >= count:
                return
            if now() > deadline:
                raise RuntimeError(f"{channel}: {subscribers} of {count} subscribers after {limit}s")
            await asyncio.sleep(0.05)  # readiness only, never used to pace messages
    finally:
        await client.aclose()


async def peer(
    args: argparse.Namespace, redis_url: str, redis_pid: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(d) python-socketio's AsyncRedisManager: two server processes, a write-only emitter process."""
    channel = f"bench-sio-{uuid.uuid4().hex[:10]}"
    env = {"BENCH_SIO_REDIS_URL": redis_url, "BENCH_SIO_CHANNEL": channel}
    with processes() as started:
        d1 = replica(started, env, SIO_APP, "sio-1")
        d2 = replica(started, env, SIO_APP, "sio-2")
        # Each server subscribes on its first connection, so both get one, as in production.
        async with clients(d1, d2) as (receiver, _idle):
            await wait_subscribers(redis_url, channel, 2)
            before = await stats(d2)
            rows = await publish_series(
                "d AsyncRedisManager", "socketio", receiver, (d1, d2), env, started, args, redis_pid
            )
            after = await stats(d2)
    sent = args.warmup + len(rows) * args.repeat * args.n
    return rows, {"sent": sent, "other_replica_received": after["received"] - before["received"]}


def machine() -> dict[str, Any]:
    versions = {
        name: importlib.metadata.version(name)
        for name in ("python-socketio", "python-engineio", "redis", "uvicorn", "aiohttp", "websockets")
    }
    binary = shutil.which("redis-server") or "redis-server"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)  # noqa: S603
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": version.stdout.strip(),
        "client_loop": "uvloop" if os.environ.get("BENCH_UVLOOP") == "1" else "asyncio",
        **versions,
    }


def order(row: dict[str, Any]) -> str:
    """`ok` if every message arrived, distinct and (with offsets) in offset order."""
    if not row["all_distinct"] or row["received"] != row["n"]:
        return "LOST"
    return (
        "-" if row["out_of_order"] is None else "ok" if row["out_of_order"] == 0 else str(row["out_of_order"])
    )


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'scenario':<22} {'k':>2} {'client msg/s':>12} {'median':>7} {'x base':>7} {'e2e msg/s':>10} "
        f"{'send msg/s':>10} {'send p50 us':>11} {'send p99 us':>11} {'order':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['scenario']:<22} {r['k']:>2} {r['client_rate']:>12,.0f} {r['client_rate_median']:>7,.0f} "
            f"{r['vs_baseline']:>7.2f} "
            f"{r['e2e_rate']:>10,.0f} {r['send_rate']:>10,.0f} {r['send_p50_us']:>11,.0f} "
            f"{r['send_p99_us']:>11,.0f} {order(r):>5}"
        )
    roles = ["server", "other", "publisher", "redis", "client"]
    head = (
        f"{'CPU us per message':<22} {'k':>2} " + " ".join(f"{role:>9}" for role in roles) + f" {'total':>9}"
    )
    lines += ["", head, "-" * len(head)]
    for r in rows:
        cpu = r["cpu_us_per_msg"]
        cells = " ".join(f"{cpu[role]:>9.1f}" if role in cpu else f"{'-':>9}" for role in roles)
        lines.append(f"{r['scenario']:<22} {r['k']:>2} {cells} {sum(cpu.values()):>9.1f}")
    return "\n".join(lines)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    started_at = datetime.now(UTC)
    load_before = os.getloadavg()
    t0 = now()
    rows = await baseline(args, "a in-process emit")
    redis_proc, port = start_redis()
    try:
        redis_url = f"redis://127.0.0.1:{port}/0"
        sb_rows, fanout = await switchboard(args, redis_url, redis_proc.proc.pid)
        rows += sb_rows
        peer_fanout = None
        if args.peer:
            peer_rows, peer_fanout = await peer(args, redis_url, redis_proc.proc.pid)
            rows += peer_rows
    finally:
        redis_proc.stop()
    # The baseline once more: how much the machine drifted during the run (ratios use the first).
    rows += await baseline(args, "a again (drift)")
    base: dict[int, float] = {}
    for r in rows:
        if r["scenario"].startswith("a "):
            base.setdefault(r["k"], r["client_rate"])
    for r in rows:
        r["vs_baseline"] = r["client_rate"] / base[r["k"]]
    return {
        "date": started_at.isoformat(timespec="seconds"),
        "seconds": round(now() - t0, 1),
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "n": args.n,
        "k": args.k,
        "warmup": args.warmup,
        "repeat": args.repeat,
        "rows": rows,
        "switchboard_fanout": fanout,
        "socketio_redis_fanout": peer_fanout,
        "process_problems": problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="messages per measured batch")
    parser.add_argument("--k", type=int, default=8, help="concurrent senders of the second batch")
    parser.add_argument("--warmup", type=int, default=1000, help="messages sent before measuring")
    parser.add_argument("--repeat", type=int, default=3, help="batches per row; the best one is kept")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds any one step may take")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds the whole run may take")
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="skip (d) AsyncRedisManager")
    args = parser.parse_args()
    if not 1 <= args.n <= 100_000 or not 1 <= args.k <= 64 or not 1 <= args.repeat <= 10:
        parser.error("--n must be 1..100000, --k 1..64 and --repeat 1..10")

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(args.budget):
            return await bench(args)

    try:
        report = run(bounded())
    except TimeoutError:
        sys.exit(f"the run took longer than --budget {args.budget:g}s; its processes were stopped")
    print(table(report["rows"]))
    fanout = report["switchboard_fanout"]
    print(
        f"(c) fan-out: replica A received {fanout['a_received']} of {fanout['sent']} sent, "
        f"replica B (holding {fanout['b_sessions']} other session) received {fanout['b_received']}: "
        + ("OK" if fanout["ok"] else "FAILED")
    )
    if report["socketio_redis_fanout"] is not None:
        peer_fanout = report["socketio_redis_fanout"]
        print(
            f"(d) fan-out: the AsyncRedisManager replica without the socket received "
            f"{peer_fanout['other_replica_received']} of {peer_fanout['sent']} emits"
        )
    for line in report["process_problems"]:
        print(f"process output: {line}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['seconds']}s, written to {path}")
    if not fanout["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
