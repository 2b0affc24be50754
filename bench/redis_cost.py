"""Redis CPU of one durable send: what `workers.Client().send_to_session(...)` costs the Redis server.

Starts its own redis-server (free loopback port, nothing on disk), registers sessions through the
bus's own registry, subscribes one plain Redis connection to each session's channel (as the replica
holding the socket would be) and times N sends after a warm-up, in two phases:

- `below-cap`: N sends spread over `--sessions` fresh sessions, so no log reaches a retention limit
  (no trimming): a session's first messages, or a session with little traffic.
- `token`: N unlogged sends (`stream_token`, as a streamed reply's tokens): the script only checks
  the session and publishes.
- `at-cap`: one session whose log already holds `--log-length` entries, then N sends: each one
  trims the oldest entry, as every send does once a log is at its count, bytes or age limit.

The Redis cost is read from the server itself, around each phase (`CONFIG RESETSTAT` before):

- `INFO commandstats`: calls and usec per command. In Redis 7 the time of a command a script calls
  is counted twice: in that command's own line AND in the `evalsha` line. So the cost of the sends
  is the `evalsha` usec plus the usec of every command that was NOT called from the script (the
  commands named in the script source are counted inside evalsha; `info` and `config` are this
  benchmark's own and excluded). Calls per send count every command, the script's inner ones too.
- `INFO cpu`: used_cpu_sys + used_cpu_user of the server over the phase, per send: everything Redis
  did (reading the request, the script, the PUBLISH to the subscriber's socket, writing the reply,
  its own timers), so it is higher than commandstats' execution time alone.

`--tree PATH` imports `bus`, `web` and `workers` from another checkout (e.g. an older commit
extracted with `git archive`), so the same measurement runs against the old code:

    .venv/bin/python -m bench.redis_cost                       # this tree
    .venv/bin/python -m bench.redis_cost --tree /tmp/sb-before --label before

Writes `bench/results/redis_cost-<label>-<UTC timestamp>.json` (git-ignored) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603  # our own redis-server, fixed arguments
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def script_commands(source: str) -> set[str]:
    """The commands a Lua script calls (`redis.call('XADD', ...)`), lower case; a script that takes
    its publish command as an argument (`redis.call(ARGV[n], ...)`: PUBLISH or SPUBLISH) calls those."""
    names = {name.lower() for name in re.findall(r"redis\.p?call\(\s*'([A-Za-z]+)'", source)}
    if re.search(r"redis\.p?call\(\s*ARGV\[", source):
        names |= {"publish", "spublish"}
    return names


def parse_commandstats(info: dict[str, Any]) -> dict[str, dict[str, float]]:
    stats = {}
    for key, value in info.items():
        if key.startswith("cmdstat_"):
            stats[key[len("cmdstat_") :]] = {"calls": float(value["calls"]), "usec": float(value["usec"])}
    return stats


async def measure(admin: Any, sends: Any, n: int, inner: set[str]) -> dict[str, Any]:
    """Run `sends()` (n sends) between two readings of the server's counters."""
    await admin.config_resetstat()
    cpu0 = await admin.info("cpu")
    t0 = time.perf_counter()
    await sends()
    elapsed = time.perf_counter() - t0
    cpu1 = await admin.info("cpu")
    stats = parse_commandstats(await admin.info("commandstats"))
    cpu = sum(float(cpu1[k]) - float(cpu0[k]) for k in ("used_cpu_sys", "used_cpu_user"))
    counted = {name: s for name, s in stats.items() if name not in ("info", "config")}
    evalsha = counted.get("evalsha", {"calls": 0.0, "usec": 0.0})
    outside = {
        name: s for name, s in counted.items() if name not in inner and name not in ("evalsha", "eval")
    }
    return {
        "n": n,
        "elapsed_s": elapsed,
        "evalsha_calls": evalsha["calls"],
        "evalsha_usec_per_send": evalsha["usec"] / n,
        "outside_script_usec_per_send": sum(s["usec"] for s in outside.values()) / n,
        "outside_script_commands": {k: v["calls"] for k, v in outside.items()},
        "total_usec_per_send": (evalsha["usec"] + sum(s["usec"] for s in outside.values())) / n,
        "commands_per_send": sum(s["calls"] for s in counted.values()) / n,
        "inner_commands_per_send": {
            name: round(s["calls"] / n, 3) for name, s in sorted(counted.items()) if name in inner
        },
        "inner_usec_per_send": {
            name: round(s["usec"] / n, 2) for name, s in sorted(counted.items()) if name in inner
        },
        "server_cpu_us_per_send": cpu * 1e6 / n,
    }


async def run(args: argparse.Namespace, port: int) -> dict[str, Any]:
    os.environ["SWITCHBOARD_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    os.environ["SWITCHBOARD_SESSION_LOG_LENGTH"] = str(args.log_length)
    if args.tree:
        sys.path.insert(0, args.tree)
    import redis.asyncio as redis

    import bus
    from bus import Envelope, Target
    from workers import Client

    async with Client() as client:
        import bus.redis_backend as backend_module

        inner = script_commands(backend_module._SEND)
        admin = redis.Redis(port=port)
        listener = redis.Redis(port=port)
        pubsub = listener.pubsub()
        received = 0
        expected = 2 * args.warmup + args.log_length + 4 * args.n * args.repeat
        all_received = asyncio.Event()

        async def drain() -> None:
            nonlocal received
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    received += 1
                    if received >= expected:
                        all_received.set()

        text = ("x" * args.size)[: args.size]

        async def new_session() -> str:
            sid = secrets.token_urlsafe(16)
            await client.bus.registry.create(sid, user=None, thread_id=None, resume_token="t" * 20)
            await pubsub.subscribe(client.bus.channel(Target.session(sid)))
            return sid

        def sender(ids: list[str], count: int) -> Any:
            async def go() -> None:
                sem = asyncio.Semaphore(args.k)

                async def one(i: int) -> None:
                    async with sem:
                        receipt = await client.send_to_session(ids[i % len(ids)], f"{i} {text}")
                        assert receipt.offset, receipt

                if args.k == 1:
                    for i in range(count):
                        await one(i)
                else:
                    await asyncio.gather(*(one(i) for i in range(count)))

            return go

        await pubsub.subscribe("bench:redis_cost")  # get_message needs a subscription first
        drainer = asyncio.create_task(drain())
        runs: dict[str, list[dict[str, Any]]] = {
            "below-cap": [],
            "at-cap": [],
            "token": [],
            "bare-publish": [],
        }
        # at-cap: one session filled to its count limit, then every send trims one entry.
        full = [await new_session()]
        await sender(full, args.log_length + args.warmup)()
        channel = client.bus.channel(Target.session(full[0]))
        payload = b"x" * (args.size + 150)

        async def publishes() -> None:
            for _ in range(args.n):
                await admin.publish(channel, payload)

        async def tokens() -> None:
            # stream_token: not logged (durable=False): the script's HMGET + PUBLISH only
            for i in range(args.n):
                payload = {"id": "m1", "token": f"{i} tok ", "isSequence": False}
                envelope = Envelope(Target.session(full[0]), "stream_token", payload, "bench")
                await client.bus.send(envelope, durable=False)

        warm = [await new_session() for _ in range(4)]
        await sender(warm, args.warmup)()
        for _ in range(args.repeat):
            # below-cap: fresh sessions, each log well under its limits.
            ids = [await new_session() for _ in range(args.sessions)]
            runs["below-cap"].append(await measure(admin, sender(ids, args.n), args.n, inner))
            runs["at-cap"].append(await measure(admin, sender(full, args.n), args.n, inner))
            runs["token"].append(await measure(admin, tokens, args.n, inner))
            # a bare PUBLISH of about the same frame size, for reference (no script)
            runs["bare-publish"].append(await measure(admin, publishes, args.n, set()))
        if hasattr(client.bus, "keys"):
            xlen = await admin.xlen(client.bus.keys.session_log(full[0]))
        else:  # the older tree names keys in its registry
            xlen = await admin.xlen(client.bus.registry.log_key(full[0]))
        # Each phase: the repeat with the lowest total (the least disturbed by the neighbours).
        phases = {name: min(rs, key=lambda r: r["total_usec_per_send"]) for name, rs in runs.items()}
        for name, rs in runs.items():
            phases[name]["totals_of_repeats"] = [round(r["total_usec_per_send"], 2) for r in rs]
            phases[name]["server_cpu_of_repeats"] = [round(r["server_cpu_us_per_send"], 2) for r in rs]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_received.wait(), 5)
        drainer.cancel()
        await asyncio.gather(drainer, return_exceptions=True)
        await pubsub.aclose()
        await listener.aclose()
        await admin.aclose()
    return {
        "tree": args.tree or str(ROOT),
        "bus_module": os.path.dirname(bus.__file__ or ""),
        "backend_module": str(getattr(backend_module, "__file__", "")),
        "script_inner_commands": sorted(inner),
        "at_cap_log_length": xlen,
        "received_by_subscriber": received,
        "expected_by_subscriber": expected,
        "phases": phases,
        "runs": runs,
    }


def machine() -> dict[str, Any]:
    binary = shutil.which("redis-server") or "redis-server"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)  # noqa: S603
    redis_version = version.stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis": redis_version,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="sends measured per phase (2000)")
    parser.add_argument("--warmup", type=int, default=200, help="sends before measuring (200)")
    parser.add_argument("--repeat", type=int, default=5, help="measurements per phase; the lowest is shown")
    parser.add_argument("--k", type=int, default=1, help="concurrent senders (1: sequential)")
    parser.add_argument("--sessions", type=int, default=20, help="sessions of the below-cap phase (20)")
    parser.add_argument("--log-length", type=int, default=1000, help="SWITCHBOARD_SESSION_LOG_LENGTH")
    parser.add_argument("--size", type=int, default=100, help="characters of message text (100)")
    parser.add_argument("--tree", help="import bus/web/workers from this checkout instead")
    parser.add_argument("--label", default="", help="name in the result file (default: after/tree)")
    args = parser.parse_args()
    if args.tree:
        args.tree = str(Path(args.tree).resolve())
    label = args.label or ("tree" if args.tree else "current")
    before = machine()
    proc, port = start_redis()
    try:
        result = asyncio.run(run(args, port))
    finally:
        proc.terminate()
        proc.wait(10)
    result.update(
        label=label,
        args=vars(args),
        machine=before,
        loadavg_after=Path("/proc/loadavg").read_text().split()[:3],
        utc=datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ"),
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"redis_cost-{label}-{result['utc']}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"code: {result['bus_module']}  ({label})   {before['redis']}")
    print(f"load average before {' '.join(before['loadavg'])}, after {' '.join(result['loadavg_after'])}")
    print(f"script calls: {', '.join(result['script_inner_commands'])}")
    header = (
        f"{'phase':<13} {'evalsha us':>10} {'other us':>9} {'total us':>9} {'cmds':>5} "
        f"{'server cpu us':>13}  inner commands per send (usec)"
    )
    print(header)
    for name, p in result["phases"].items():
        inner = ", ".join(
            f"{c} {p['inner_commands_per_send'][c]:g} ({p['inner_usec_per_send'][c]:.1f})"
            for c in p["inner_commands_per_send"]
        )
        print(
            f"{name:<13} {p['evalsha_usec_per_send']:>10.1f} {p['outside_script_usec_per_send']:>9.1f} "
            f"{p['total_usec_per_send']:>9.1f} {p['commands_per_send']:>5.2f} "
            f"{p['server_cpu_us_per_send']:>13.1f}  {inner}"
        )
    print(
        f"Method: per phase, CONFIG RESETSTAT, N sends, INFO commandstats; the lowest of {args.repeat}\n"
        "repeats. Redis 7 counts a command a script calls both in its own line and in evalsha, so\n"
        "'total' = evalsha usec + usec of the commands not called by the script (the bare-publish\n"
        "row has no script: its publish is 'other').\n"
        "'cmds' counts every command, inner ones included. 'server cpu' = INFO cpu used_cpu_sys+user\n"
        "delta / N: all server work (network I/O, the subscriber's output, timers), not only commands."
    )
    for name, p in result["phases"].items():
        print(f"{name}: total us of each repeat {p['totals_of_repeats']}, cpu {p['server_cpu_of_repeats']}")
    print(f"subscriber received {result['received_by_subscriber']} of {result['expected_by_subscriber']}")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
