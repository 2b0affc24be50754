"""Switchboard against its peers, like with like, in one run: python-socketio's AsyncRedisManager (the
anchor) and Socket.IO on Node.js with @socket.io/redis-adapter (a second reference).

    .venv/bin/python -m bench.peers                 # every workload, about 15 minutes
    .venv/bin/python -m bench.peers --quick         # shorter phases and fewer sessions, a smoke run
    .venv/bin/python -m bench.peers --workloads http,many

Every peer runs the same topology: its own redis-server (free port, nothing on disk), replicas on free
loopback ports (uvicorn for the Python peers, with the same options; node for Node.js), the same clients
(bench/node/clients.js: raw socket.io-client sockets, websocket transport) and the peer's own publisher
in a separate process (Switchboard: `workers.Client`; python-socketio: a write-only AsyncRedisManager;
Node: @socket.io/redis-emitter). Node's packages are pinned in bench/node/package-lock.json and installed
here with `npm ci` when missing. Workloads (see bench/README.md):

- many: 100 and 1,000 clients on the last of 2 replicas, 1k/2k/4k msg/s and a blast: latency, loss, CPU;
- scale: 1, 2 and 4 replicas, 1,000 clients spread, 1k msg/s: CPU per delivered message;
- http: `POST /send/{session}` -> socket, on the replica holding it and across, 250-2,000 req/s;
- idle: 1,000 and 5,000 idle sessions on one replica: memory, setup rate, descriptors after they leave;
- tokens: 100 and 1,000 sessions streamed 20 tokens/s each from a worker (Python peers).

CPU is user + system time from /proc of each process over a phase, divided by what was delivered. It
writes bench/results/peers-<UTC timestamp>.json (git-ignored) and prints the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.harness import Process, free_port, start_redis

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "bench" / "node"
RESULTS = ROOT / "bench" / "results"
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
SOCKET_PATH = "/chat/ws/socket.io"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Server:
    process: Process
    url: str

    @property
    def pid(self) -> int:
        return self.process.proc.pid


@dataclass
class Peer:
    """One system under test: how to start its replicas and its publisher."""

    name: str
    #: The replica command and environment, given (port, redis URL, channel or key prefix).
    replica: Callable[[int, str, str], tuple[list[str], dict[str, str]]]
    publisher: Callable[[str, str], tuple[list[str], dict[str, str]]]
    streams: bool = True


#: uvicorn compresses websocket messages by default (permessage-deflate); Socket.IO on Node does not
#: (its `perMessageDeflate` defaults to false). Off for all three peers, like with like (`--deflate`
#: turns it on for the Python ones).
DEFLATE = ["--ws-per-message-deflate", "false"]


def _uvicorn(app: str, port: int) -> list[str]:
    # The same options for both Python peers: uvicorn's defaults (uvloop, its websocket protocol).
    host = ["--host", "127.0.0.1", "--port", str(port)]
    quiet = ["--log-level", "warning", "--no-access-log"]
    return [sys.executable, "-m", "uvicorn", app, *host, *quiet, *DEFLATE]


def _switchboard_env(redis_url: str, prefix: str) -> dict[str, str]:
    return {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_KEY_PREFIX": prefix,
        "SWITCHBOARD_HANDSHAKES_PER_MINUTE": "0",  # every bench client comes from 127.0.0.1
    }


PEERS = {
    "python-socketio": Peer(
        "python-socketio",
        lambda port, url, tag: (
            _uvicorn("bench.sio_app:app", port),
            {"BENCH_SIO_REDIS_URL": url, "BENCH_SIO_CHANNEL": tag},
        ),
        lambda url, tag: (
            [sys.executable, "-m", "bench.publisher", "socketio", "-"],
            {"BENCH_SIO_REDIS_URL": url, "BENCH_SIO_CHANNEL": tag, "BENCH_UVLOOP": "1"},
        ),
    ),
    "switchboard": Peer(
        "switchboard",
        lambda port, url, tag: (_uvicorn("bench.switchboard_app:app", port), _switchboard_env(url, tag)),
        lambda url, tag: (
            [sys.executable, "-m", "bench.publisher", "switchboard", "-"],
            {**_switchboard_env(url, tag), "BENCH_UVLOOP": "1"},
        ),
    ),
    "node": Peer(
        "node",
        lambda port, url, tag: (["node", str(NODE / "server.js")], {"PORT": str(port), "REDIS_URL": url}),
        lambda url, tag: (["node", str(NODE / "publisher.js")], {"REDIS_URL": url}),
        streams=False,
    ),
}


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Until the server answers HTTP at all (any status)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:g}s") from None
            time.sleep(0.05)


class Clients:
    """A bench/node/clients.js process holding `count` sockets."""

    def __init__(self, urls: list[str], count: int, name: str) -> None:
        self.file = Path(tempfile.mkstemp(prefix="bench-sessions-", suffix=".txt")[1])
        args = ["node", str(NODE / "clients.js"), "--urls", ",".join(urls), "--path", SOCKET_PATH]
        args += ["--count", str(count), "--out", str(self.file), "--concurrency", "20"]
        self.process = Process(args, name=name, stdin=True)
        self.process.wait_for_line("READY", timeout=600)
        self.ready = self._last("READY")
        self._reports = 0
        if self.ready["failed"]:
            raise RuntimeError(f"{self.ready['failed']} of {count} clients could not connect")

    @property
    def pid(self) -> int:
        return self.process.proc.pid

    def _last(self, marker: str) -> Any:
        line = next(x for x in reversed(self.process.lines) if x.startswith(marker + " "))
        return json.loads(line.split(" ", 1)[1])

    def mark(self) -> None:
        before = sum(line == "MARKED" for line in self.process.lines)
        self.process.tell("mark")
        self.process.wait_for_count("MARKED", before + 1)

    def report(self) -> dict[str, Any]:
        self._reports += 1
        self.process.tell("report")
        self.process.wait_for_count("REPORT ", self._reports)
        report: dict[str, Any] = self._last("REPORT")
        return report

    def settle(self, expected: int, quiet: float = 2.0, limit: float = 60.0) -> dict[str, Any]:
        """The report once `expected` arrived, or nothing arrived for `quiet` seconds."""
        started = changed = time.monotonic()
        last = -1
        while True:
            report = self.report()
            got = report["received"] + report["tokens"]
            now = time.monotonic()
            if got != last:
                last, changed = got, now
            if got >= expected or now - changed > quiet or now - started > limit:
                return report
            time.sleep(0.25)

    def close(self) -> None:
        self.process.tell("close")
        self.process.wait_for_line("CLOSED", timeout=120)


class Run:
    """The processes of one peer configuration, all stopped at the end."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.tag = f"bench{uuid.uuid4().hex[:8]}"
        self.processes: list[Process] = []
        redis, port = start_redis()
        self.processes.append(redis)
        self.redis_pid = redis.proc.pid
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        self.servers: list[Server] = []

    def replicas(self, n: int) -> list[Server]:
        for i in range(n):
            port = free_port()
            args, env = self.peer.replica(port, self.redis_url, self.tag)
            process = Process(args, env=env, name=f"{self.peer.name}-{i + 1}")
            self.processes.append(process)
            server = Server(process, f"http://127.0.0.1:{port}")
            wait_http(server.url + "/")
            self.servers.append(server)
        return self.servers

    def publisher(self) -> Process:
        args, env = self.peer.publisher(self.redis_url, self.tag)
        process = Process(args, env=env, name=f"{self.peer.name}-publisher", stdin=True)
        self.processes.append(process)
        process.wait_for_line("ready")
        return process

    def clients(self, urls: list[str], count: int) -> Clients:
        clients = Clients(urls, count, f"{self.peer.name}-clients")
        self.processes.append(clients.process)
        return clients

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


@contextlib.contextmanager
def running(peer: Peer) -> Iterator[Run]:
    run = Run(peer)
    try:
        yield run
    finally:
        run.stop()


@dataclass
class Meter:
    """CPU seconds of named processes over a phase."""

    pids: dict[str, int]
    start: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def us_per(self, count: int) -> dict[str, float]:
        used = {name: cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}
        return {name: round(seconds * 1e6 / max(count, 1), 1) for name, seconds in used.items()}


def command(process: Process, line: str, timeout: float = 600) -> dict[str, Any]:
    """Send a publisher command and wait for its JSON answer."""
    before = sum(x.startswith("{") for x in process.lines)
    process.tell(line)
    process.wait_for_count("{", before + 1, timeout)
    result: dict[str, Any] = process.last_json()
    return result


def pids(run: Run, clients: Clients, sender: Process) -> dict[str, int]:
    named = {f"replica{i + 1}": s.pid for i, s in enumerate(run.servers)}
    return {**named, "redis": run.redis_pid, "sender": sender.proc.pid, "clients": clients.pid}


def delivered_row(report: dict[str, Any], sent: dict[str, Any], cpu: dict[str, float]) -> dict[str, Any]:
    """What a phase delivered: `sent` is the sender's result (sent, errors, seconds)."""
    return {
        "sent": sent["sent"],
        "errors": sent.get("errors", 0),
        "received": report["received"],
        "lost": sent["sent"] - sent.get("errors", 0) - report["received"],
        "p50_ms": round(report["latency"]["p50_ms"], 2),
        "p90_ms": round(report["latency"]["p90_ms"], 2),
        "p99_ms": round(report["latency"]["p99_ms"], 2),
        "cpu_us": cpu,
        "disconnects": report["disconnects"],
    }


def warmed(run: Run, replicas: int, count: int, warmup: str, urls: str = "last") -> tuple[Clients, Process]:
    """`replicas` replicas, `count` clients (on the last one, or spread over all), the publisher, and
    one warm-up command whose deliveries are awaited."""
    servers = run.replicas(replicas)
    clients = run.clients([servers[-1].url] if urls == "last" else [s.url for s in servers], count)
    publisher = run.publisher()
    command(publisher, f"{warmup} {clients.file}")
    clients.settle(10**9, quiet=1.0, limit=10)
    return clients, publisher


def measured(
    run: Run, clients: Clients, publisher: Process, line: str
) -> tuple[dict[str, Any], dict[str, Any], Meter]:
    """One publisher command with every process's CPU metered, once its deliveries arrived:
    (what the publisher said, what the clients got, the meter)."""
    clients.mark()
    meter = Meter(pids(run, clients, publisher))
    sent = command(publisher, f"{line} {clients.file}")
    return sent, clients.settle(sent["sent"]), meter


def many(peer: Peer, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Clients on the last of 2 replicas, an external publisher at fixed rates, then a blast."""
    rows = []
    for count in args.many_clients:
        with running(peer) as run:
            clients, publisher = warmed(run, 2, count, f"rate 500 {args.warmup}")
            for rate in [*args.rates, "max"]:
                line = f"rate {rate} {args.seconds}" if rate != "max" else f"blast {args.blast} 16"
                sent, report, meter = measured(run, clients, publisher, line)
                row = delivered_row(report, sent, meter.us_per(report["received"]))
                if rate == "max":
                    span = report["last"] - sent["t_start"] if report["received"] else 0
                    row["delivered_per_s"] = round(report["received"] / span) if span > 0 else 0
                rows.append({"clients": count, "rate": rate, **row})
    return rows


def scale(peer: Peer, args: argparse.Namespace) -> list[dict[str, Any]]:
    """1, 2 and 4 replicas, the clients spread over them, one fixed rate."""
    rows = []
    for n in args.replicas:
        with running(peer) as run:
            clients, publisher = warmed(run, n, args.scale_clients, f"rate 500 {args.warmup}", urls="all")
            line = f"rate {args.scale_rate} {args.seconds}"
            sent, report, meter = measured(run, clients, publisher, line)
            cpu = meter.us_per(report["received"])
            row = delivered_row(report, sent, cpu)
            row["replicas_us"] = round(sum(v for k, v in cpu.items() if k.startswith("replica")), 1)
            rows.append({"replicas": n, "rate": args.scale_rate, **row})
    return rows


def http(peer: Peer, args: argparse.Namespace) -> list[dict[str, Any]]:
    """POST /send/{session} to replica 1, the sockets on replica 1 (same) or replica 2 (across)."""
    rows = []
    for where in ("same", "across"):
        with running(peer) as run:
            servers = run.replicas(2)
            holder = servers[0] if where == "same" else servers[1]
            clients = run.clients([holder.url], args.http_clients)
            for rate in [args.http_rates[0], *args.http_rates]:  # the first one again as a warm-up
                clients.mark()
                loadgen = ["node", str(NODE / "loadgen.js"), "--post", servers[0].url]
                loadgen += ["--targets", str(clients.file), "--rate", str(rate)]
                loadgen += ["--seconds", str(args.seconds)]
                load = Process(loadgen, name="loadgen")
                run.processes.append(load)
                meter = Meter(
                    {**{f"replica{i + 1}": s.pid for i, s in enumerate(servers)}, "redis": run.redis_pid}
                )
                load.wait_for_line("{", timeout=args.seconds + 120)
                result = load.last_json()
                report = clients.settle(result["sent"])
                row = delivered_row(report, result, meter.us_per(report["received"]))
                row["response_p50_ms"] = round(result["response"]["p50_ms"], 2)
                row["response_p99_ms"] = round(result["response"]["p99_ms"], 2)
                row["statuses"] = result["statuses"]
                rows.append({"where": where, "rate": rate, **row})
            rows.pop(-len(args.http_rates) - 1)  # the warm-up
    return rows


def idle(peer: Peer, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Idle sessions on one replica: what each costs, how fast they are set up, what stays after."""
    rows = []
    for count in args.idle_sessions:
        with running(peer) as run:
            (server,) = run.replicas(1)
            time.sleep(1)  # let the replica finish starting (lazy imports, first connections)
            rss, fds = rss_kib(server.pid), descriptors(server.pid)
            clients = run.clients([server.url], count)
            setup = clients.ready["seconds"]
            time.sleep(2)
            rss_after, fds_held = rss_kib(server.pid), descriptors(server.pid)
            clients.close()
            deadline = time.monotonic() + 30
            while descriptors(server.pid) > fds + 5 and time.monotonic() < deadline:
                time.sleep(0.25)
            rows.append(
                {
                    "sessions": count,
                    "setup_per_s": round(count / setup),
                    "rss_kib_per_session": round((rss_after - rss) / count, 1),
                    "fds_before": fds,
                    "fds_held": fds_held,
                    "fds_after": descriptors(server.pid),
                }
            )
    return rows


def tokens(peer: Peer, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Sessions on the last of 2 replicas, each streamed `token_rate` tokens/s by a worker."""
    rows = []
    for count in args.token_sessions:
        with running(peer) as run:
            clients, publisher = warmed(run, 2, count, f"tokens {args.token_rate} {args.warmup}")
            line = f"tokens {args.token_rate} {args.seconds}"
            sent, report, meter = measured(run, clients, publisher, line)
            got = report["tokens"]
            span = report["last"] - report["first"] if got else 0
            rows.append(
                {
                    "sessions": count,
                    "tokens_per_s": args.token_rate * count,
                    "sent": sent["sent"],
                    "tokens": got,
                    "events": report["tokenEvents"],
                    "lost": sent["sent"] - got,
                    "delivered_per_s": round(got / span) if span > 0 else 0,
                    "p50_ms": round(report["tokenLatency"]["p50_ms"], 2),
                    "p99_ms": round(report["tokenLatency"]["p99_ms"], 2),
                    "cpu_us": meter.us_per(got),
                }
            )
    return rows


WORKLOADS: dict[str, Callable[[Peer, argparse.Namespace], list[dict[str, Any]]]] = {
    "many": many,
    "scale": scale,
    "http": http,
    "idle": idle,
    "tokens": tokens,
}


def ensure_node() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("bench.peers needs node and npm: apt-get install nodejs npm (make test does)")
    if not (NODE / "node_modules" / ".package-lock.json").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE, check=True)  # noqa: S607


def machine() -> dict[str, Any]:
    def version(name: str) -> str:
        from importlib.metadata import version as v

        return v(name)

    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()  # noqa: S607
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)  # noqa: S607
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "node": node,
        "redis": redis.stdout.split()[2],
        "python-socketio": version("python-socketio"),
        "uvicorn": version("uvicorn"),
        "redis-py": version("redis"),
        "load_before": os.getloadavg(),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value: Any = row
            for part in column.split("."):
                value = value.get(part, "") if isinstance(value, dict) else ""
            cells.append(_fmt(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLUMNS = {
    name: columns.split()
    for name, columns in {
        "many": "peer clients rate sent errors lost delivered_per_s p50_ms p90_ms p99_ms cpu_us.replica2 "
        "cpu_us.replica1 cpu_us.sender cpu_us.redis",
        "scale": "peer replicas rate lost p50_ms p99_ms replicas_us cpu_us.redis cpu_us.sender",
        "http": "peer where rate sent errors lost p50_ms p99_ms response_p50_ms response_p99_ms "
        "cpu_us.replica1 cpu_us.replica2 cpu_us.redis",
        "idle": "peer sessions setup_per_s rss_kib_per_session fds_before fds_held fds_after",
        "tokens": "peer sessions tokens_per_s sent tokens events lost delivered_per_s p50_ms p99_ms "
        "cpu_us.replica2 cpu_us.sender cpu_us.redis",
    }.items()
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="many,scale,http,idle,tokens")
    parser.add_argument("--peers", default="python-socketio,switchboard,node")
    parser.add_argument("--quick", action="store_true", help="short phases, fewer sessions")
    parser.add_argument("--deflate", action="store_true", help="uvicorn's websocket compression on")
    args = parser.parse_args()
    if args.deflate:
        DEFLATE[:] = []
    args.seconds, args.warmup, args.blast = (3, 1, 3000) if args.quick else (6, 2, 20000)
    args.many_clients = [100, 1000]
    args.rates = [1000, 2000, 4000]
    args.replicas = [1, 2, 4]
    args.scale_clients, args.scale_rate = 1000, 1000
    args.http_clients, args.http_rates = 100, [250, 500, 1000, 2000]
    args.idle_sessions = [1000] if args.quick else [1000, 5000]
    args.token_sessions, args.token_rate = [100, 1000], 20
    ensure_node()
    info = machine()
    results: dict[str, Any] = {"machine": info, "args": {k: v for k, v in vars(args).items()}}
    for workload in args.workloads.split(","):
        rows: list[dict[str, Any]] = []
        for name in args.peers.split(","):
            peer = PEERS[name]
            if workload == "tokens" and not peer.streams:
                continue
            print(f"-- {workload}: {name}", file=sys.stderr, flush=True)
            rows += [{"peer": name, **row} for row in WORKLOADS[workload](peer, args)]
        results[workload] = rows
        print(f"\n### {workload}\n\n{table(rows, COLUMNS[workload])}\n", flush=True)
    info["load_after"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"peers-{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
