"""Scale run: many idle sessions on two replicas, what they cost at rest, and a burst to all of them.

    .venv/bin/python -m bench.scale                     # 10,000 sessions, 4 client processes
    .venv/bin/python -m bench.scale --sessions 2000 --clients 2

Starts its own redis-server and two uvicorn replicas (`tests.apps.app:app`, Redis bus,
SWITCHBOARD_HANDSHAKES_PER_MINUTE=0 since every client comes from 127.0.0.1) on free loopback ports,
and `--clients` processes of `bench/scale_clients.py`, each holding sessions/clients python-socketio
sockets (half on each replica). File limits are raised to the hard limit (children inherit them).
Then it measures:

- setup: the time from the first connect to the last `session` event, over all client processes;
- replica RSS per session: VmRSS of each replica after setup minus before, over its sessions;
- Redis memory per session: INFO memory used_memory after minus before, over the sessions;
- Redis commands/s at rest: INFO commandstats over `--rest` seconds, and the CPU of Redis and of the
  replicas over the same window;
- a burst: this process (a worker, `workers.Client`) sends one message to every session with at most
  `--concurrency` sends in flight; delivery time is from the first send to the last `new_message`
  any client got (one CLOCK_MONOTONIC clock), loss is sent minus received.

Writes bench/results/scale-<UTC timestamp>.json (git-ignored) and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import now, percentile
from tests.harness import Process, start_redis, start_replica

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TICK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def read_ids(path: str) -> list[str]:
    ids = Path(path).read_text().split()
    os.unlink(path)
    return ids


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ready_line(proc: Process, marker: str) -> dict[str, Any]:
    line = next(line for line in reversed(proc.lines) if line.startswith(marker))
    return dict(json.loads(line[len(marker) :]))


async def run(args: argparse.Namespace, result: dict[str, Any]) -> None:
    import redis.asyncio as redis

    started: list[Process] = []
    try:
        redis_proc, port = start_redis(None, "--maxclients", "20000")
        started.append(redis_proc)
        url = f"redis://127.0.0.1:{port}/0"
        env = {
            "SWITCHBOARD_REDIS_URL": url,
            "SWITCHBOARD_KEY_PREFIX": f"scale{uuid.uuid4().hex[:8]}",
            "SWITCHBOARD_HANDSHAKES_PER_MINUTE": "0",
        }
        os.environ.update(env)
        admin = redis.Redis(port=port)
        replicas = []
        for name in ("replica-a", "replica-b"):
            replica = start_replica(env, app="tests.apps.app:app", name=name)
            started.append(replica.process)
            replicas.append(replica)
        await asyncio.sleep(2)
        pids = [r.process.proc.pid for r in replicas]
        rss0 = [rss_kib(pid) for pid in pids]
        mem0 = int((await admin.info("memory"))["used_memory"])
        keys0 = int(await admin.dbsize())

        per = [
            args.sessions // args.clients + (i < args.sessions % args.clients) for i in range(args.clients)
        ]
        urls = ",".join(r.url for r in replicas)
        clients = []
        t0 = now()
        for i, count in enumerate(per):
            out = f"/tmp/switchboard-scale-{os.getpid()}-{i}.txt"  # noqa: S108  # our own file
            proc = Process(
                [
                    sys.executable,
                    "-m",
                    "bench.scale_clients",
                    "--count",
                    str(count),
                    "--urls",
                    urls,
                    "--path",
                    replicas[0].socketio_path,
                    "--out",
                    out,
                    "--concurrency",
                    str(args.connect_concurrency),
                ],
                name=f"clients-{i}",
                stdin=True,
            )
            started.append(proc)
            clients.append((proc, out))
        setup_timeout = max(120.0, args.sessions / 20)
        for proc, _ in clients:
            await asyncio.to_thread(proc.wait_for_line, "READY", setup_timeout)
        setup = now() - t0
        readies = [ready_line(p, "READY ") for p, _ in clients]
        session_ids: list[str] = []
        for _, out in clients:
            session_ids += read_ids(out)
        held = len(session_ids)
        print(f"setup: {held} sessions in {setup:.1f}s ({readies})", flush=True)
        await asyncio.sleep(args.settle)
        rss1 = [rss_kib(pid) for pid in pids]
        mem1 = int((await admin.info("memory"))["used_memory"])
        keys1 = int(await admin.dbsize())
        client_rss = [rss_kib(p.proc.pid) for p, _ in clients]

        # at rest
        await admin.config_resetstat()
        redis_pid = redis_proc.proc.pid
        cpu_r0, cpu_p0, w0 = cpu_seconds(redis_pid), [cpu_seconds(p) for p in pids], time.monotonic()
        await asyncio.sleep(args.rest)
        window = time.monotonic() - w0
        cpu_r1, cpu_p1 = cpu_seconds(redis_pid), [cpu_seconds(p) for p in pids]
        stats = await admin.info("commandstats")
        at_rest = {
            k[len("cmdstat_") :]: int(v["calls"])
            for k, v in stats.items()
            if k.startswith("cmdstat_") and k not in ("cmdstat_info", "cmdstat_config")
        }
        rest = {
            "seconds": window,
            "commands": at_rest,
            "commands_per_second": sum(at_rest.values()) / window,
            "redis_cpu_percent": 100 * (cpu_r1 - cpu_r0) / window,
            "replica_cpu_percent": [100 * (b - a) / window for a, b in zip(cpu_p0, cpu_p1, strict=True)],
        }
        print(f"at rest: {rest}", flush=True)

        # burst: one message to every session, from this process as a worker
        from workers import Client

        cpu_r0, cpu_p0 = cpu_seconds(redis_pid), [cpu_seconds(p) for p in pids]
        latencies: list[float] = []
        errors = 0
        statuses: Counter[str] = Counter()
        async with Client() as worker:
            gate = asyncio.Semaphore(args.concurrency)

            async def send(session_id: str) -> None:
                nonlocal errors
                async with gate:
                    t = now()
                    try:
                        receipt = await worker.send_to_session(session_id, f"burst to {session_id}")
                        statuses[receipt.status] += 1
                    except Exception:
                        errors += 1
                    latencies.append(now() - t)

            b0, w0 = now(), time.monotonic()
            await asyncio.gather(*(send(s) for s in session_ids))
            sent_at = now()
            # until every message arrived, or nothing more arrived for 5 s
            deadline, received, changed = time.monotonic() + args.burst_timeout, -1, time.monotonic()
            while True:
                for proc, _ in clients:
                    proc.tell("report")
                await asyncio.sleep(0.5)
                reports = [ready_line(p, "REPORT ") for p, _ in clients]
                total = sum(r["received"] for r in reports)
                if total != received:
                    received, changed = total, time.monotonic()
                    cpu_r1, cpu_p1 = cpu_seconds(redis_pid), [cpu_seconds(p) for p in pids]
                    window = time.monotonic() - w0
                if received >= held or time.monotonic() > deadline or time.monotonic() - changed > 5:
                    break
        last = max((r["last"] for r in reports if "last" in r), default=b0)
        replica_cpu = sum(b - a for a, b in zip(cpu_p0, cpu_p1, strict=True))
        idle_cpu = sum(rest["replica_cpu_percent"]) / 100 * window
        disconnects: Counter[str] = Counter()
        for r in reports:
            disconnects.update(r.get("disconnects", {}))
        burst = {
            "sent": len(session_ids) - errors,
            "errors": errors,
            "receipts": dict(statuses),
            "received": received,
            "lost": len(session_ids) - errors - received,
            "concurrency": args.concurrency,
            "send_seconds": sent_at - b0,
            "delivery_seconds": last - b0,
            "send_p50_ms": percentile(latencies, 50) * 1e3,
            "send_p99_ms": percentile(latencies, 99) * 1e3,
            "cpu_window_seconds": window,
            "redis_cpu_us_per_message": 1e6 * (cpu_r1 - cpu_r0) / max(1, held),
            "replica_cpu_us_per_message": 1e6 * replica_cpu / held,
            "replica_cpu_us_per_message_less_idle": 1e6 * (replica_cpu - idle_cpu) / held,
            "still_connected": sum(r["connected"] for r in reports),
            "client_disconnects": dict(disconnects),
        }
        print(f"burst: {burst}", flush=True)
        result.update(
            sessions_requested=args.sessions,
            sessions=held,
            client_processes=args.clients,
            setup_seconds=setup,
            setup_per_process=readies,
            replica_rss_kib_before=rss0,
            replica_rss_kib_after=rss1,
            replica_rss_bytes_per_session=1024 * (sum(rss1) - sum(rss0)) / held,
            redis_used_memory_before=mem0,
            redis_used_memory_after=mem1,
            redis_bytes_per_session=(mem1 - mem0) / held,
            redis_keys_before=keys0,
            redis_keys_after=keys1,
            client_rss_kib=client_rss,
            client_rss_bytes_per_socket=1024 * sum(client_rss) / held,
            at_rest=rest,
            burst=burst,
        )
        result["replica_log"] = {
            r.process.name: {
                word: sum(word in line for line in r.process.lines)
                for word in ("attached", "detached", "Traceback", "ERROR", "WARNING", "timeout")
            }
            for r in replicas
        }
        for proc, _ in clients:
            proc.tell("quit")
        for proc, _ in clients:
            await asyncio.to_thread(proc.proc.wait, 120)
        await admin.aclose()
    finally:
        for proc in reversed(started):
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4, help="client processes (4)")
    parser.add_argument(
        "--connect-concurrency", type=int, default=10, help="connects in flight per process (10)"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="burst sends in flight (64)")
    parser.add_argument("--rest", type=float, default=10.0, help="seconds measured at rest (10)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after setup before measuring")
    parser.add_argument("--burst-timeout", type=float, default=120.0)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "args": vars(args),
        "nofile": raise_file_limit(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "loadavg_before": loadavg(),
    }
    wall = time.monotonic()
    asyncio.run(run(args, result))
    result["loadavg_after"] = loadavg()
    result["wall_seconds"] = time.monotonic() - wall
    result["utc"] = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"scale-{result['utc']}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("at_rest", "burst")}, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
