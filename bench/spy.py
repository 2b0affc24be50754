"""Where a replica's CPU goes in a bench/peers.py workload: py-spy on the replica, by function.

    .venv/bin/python -m bench.spy many      # 1,000 clients on the last of 2 replicas, 2k msg/s
    .venv/bin/python -m bench.spy http      # POST /send/{id} to the replica holding 100 sockets, 700 req/s
    .venv/bin/python -m bench.spy setup     # 2,000 sessions connecting, 20 at a time
    .venv/bin/python -m bench.spy many --peer python-socketio

Starts the peer as bench/peers.py does, records the replica with `py-spy record -f raw` (250 Hz, idle
time left out) during the phase and prints, for the functions that take the most, their share of the
samples with their callees (inclusive). The raw profile goes to bench/results/spy-<workload>-<peer>.txt.
bench/README.md quotes these shares.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench.peers import NODE, PEERS, RESULTS, command, cpu_seconds, ensure_node, running
from tests.harness import Process

SECONDS = 8
_LOCATION = re.compile(r" \((?:[^()]*/)?([^/()]+?)(?::\d+)?\)$")


def spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args = [binary, "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-d", str(SECONDS), "-r", "250"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603


def shares(raw: Path, top: int) -> list[tuple[float, str]]:
    """(share of samples, function (file)) of the `top` functions, counting a function once per stack."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        for frame in dict.fromkeys(_LOCATION.sub(r" (\1)", f) for f in stack.split(";")):
            inclusive[frame] += n
    return [(n / max(total, 1), frame) for frame, n in inclusive.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=["many", "http", "setup"])
    parser.add_argument("--peer", default="switchboard", choices=["switchboard", "python-socketio"])
    parser.add_argument("--top", type=int, default=60)
    args = parser.parse_args()
    ensure_node()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"spy-{args.workload}-{args.peer}.txt"
    with running(PEERS[args.peer]) as run:
        if args.workload == "many":
            servers = run.replicas(2)
            clients = run.clients([servers[-1].url], 1000)
            publisher = run.publisher()
            command(publisher, f"rate 500 2 {clients.file}")
            recorder = spy(servers[-1].pid, out)
            print(command(publisher, f"rate 2000 {SECONDS} {clients.file}"))
        elif args.workload == "http":
            (server, _) = run.replicas(2)
            clients = run.clients([server.url], 100)
            recorder = spy(server.pid, out)
            loadgen = ["node", str(NODE / "loadgen.js"), "--post", server.url, "--targets", str(clients.file)]
            load = Process([*loadgen, "--rate", "700", "--seconds", str(SECONDS)], name="loadgen")
            load.wait_for_line("{", timeout=SECONDS + 120)
            print(load.last_json())
        else:
            (server,) = run.replicas(1)
            recorder = spy(server.pid, out)
            before = cpu_seconds(server.pid)
            clients = run.clients([server.url], 2000)
            used = cpu_seconds(server.pid) - before
            print(f"{clients.ready}; replica CPU per setup {used / 2000 * 1e6:.0f} us (with py-spy attached)")
        recorder.wait()
    for share, frame in shares(out, args.top):
        print(f"{share:6.1%}  {frame}")
    print(f"raw profile: {out}")


if __name__ == "__main__":
    main()
