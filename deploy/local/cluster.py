"""A real local cluster on loopback ports: redis-server, three uvicorn replicas and HAProxy.

    make cluster        # or: .venv/bin/python deploy/local/cluster.py
    make cluster-stop   # or Ctrl-C in the terminal that runs it

Front: http://127.0.0.1:8080 (chat page at /chat/); replicas 8101-8103; Redis 6390 (override with
CLUSTER_FRONT_PORT, CLUSTER_REPLICA_PORTS=a,b,c, CLUSTER_REDIS_PORT, CLUSTER_APP=module:app).
HAProxy checks each replica's readiness (/chat/readyz) every 500 ms, so a draining or deaf replica
gets no new connections. Kill only what this launcher started: its pid file lists its own pid.
The end-to-end test (tests/test_cluster.py) drives the same class with free ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PID_FILE = HERE / ".cluster.pid"


def _need(binary: str, package: str) -> str:
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if found is None:
        raise RuntimeError(f"{binary} is not installed: apt-get install -y {package} (make cluster does)")
    return found


class Service:
    """A child process whose output is kept (and echoed when `echo`)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], echo: bool) -> None:
        self.name = name
        self.lines: list[str] = []
        self.proc = subprocess.Popen(  # noqa: S603  # our own binaries and arguments
            args,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, args=(echo,), daemon=True).start()

    def _read(self, echo: bool) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if echo:
                print(f"[{self.name}] {line}", end="", flush=True)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Cluster:
    def __init__(
        self,
        *,
        front_port: int,
        replica_ports: list[int],
        redis_port: int,
        app: str = "web.demo.app:app",
        ready_path: str = "/chat/readyz",
        env: dict[str, str] | None = None,
        echo: bool = False,
    ) -> None:
        self.front_port = front_port
        self.replica_ports = replica_ports
        self.redis_port = redis_port
        self.app = app
        self.ready_path = ready_path
        self.env = {
            "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "SWITCHBOARD_READY_PATH": ready_path,
            **(env or {}),
        }
        self.echo = echo
        self.redis: Service | None = None
        self.haproxy: Service | None = None
        self.replicas: list[Service | None] = [None] * len(replica_ports)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.front_port}"

    def start(self) -> None:
        redis_server = _need("redis-server", "redis-server")
        haproxy = _need("haproxy", "haproxy")
        self.redis = Service(
            "redis",
            [
                redis_server,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            {},
            self.echo,
        )
        self._wait_line(self.redis, "Ready to accept connections")
        for index in range(len(self.replica_ports)):
            self.start_replica(index)
        ports = {f"SWITCHBOARD_R{i + 1}_PORT": str(p) for i, p in enumerate(self.replica_ports)}
        env = {
            "SWITCHBOARD_FRONT_PORT": str(self.front_port),
            "SWITCHBOARD_READY_PATH": self.ready_path,
            **ports,
        }
        self.haproxy = Service("haproxy", [haproxy, "-db", "-f", str(HERE / "haproxy.cfg")], env, self.echo)
        self.wait_front()

    def start_replica(self, index: int) -> None:
        port = self.replica_ports[index]
        args = [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1", "--port", str(port)]
        env = {**self.env, "SWITCHBOARD_REPLICA_ID": f"r{index + 1}"}
        self.replicas[index] = Service(f"r{index + 1}", args, env, self.echo)
        self.wait_ready(index)

    def stop_replica(self, index: int) -> int:
        """SIGTERM the replica (it drains) and wait for it to exit by itself; its exit status."""
        replica = self.replicas[index]
        assert replica is not None
        replica.proc.send_signal(signal.SIGTERM)
        return replica.proc.wait(120)

    def restart_replica(self, index: int) -> int:
        code = self.stop_replica(index)
        self.start_replica(index)
        return code

    def wait_ready(self, index: int, timeout: float = 30) -> None:
        url = f"http://127.0.0.1:{self.replica_ports[index]}{self.ready_path}"
        replica = self.replicas[index]
        deadline = time.monotonic() + timeout
        while not _answers(url):
            if (replica is not None and replica.proc.poll() is not None) or time.monotonic() > deadline:
                output = "\n".join(replica.lines[-30:]) if replica else ""
                raise RuntimeError(f"replica r{index + 1} did not become ready:\n{output}")
            time.sleep(0.1)

    def wait_front(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not _answers(self.url + self.ready_path):
            assert self.haproxy is not None
            if self.haproxy.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("HAProxy did not come up:\n" + "\n".join(self.haproxy.lines[-30:]))
            time.sleep(0.1)

    def stop(self) -> None:
        for service in [self.haproxy, *self.replicas, self.redis]:
            if service is not None:
                service.stop()

    @staticmethod
    def _wait_line(service: Service, marker: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in service.lines):
            if service.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{service.name} did not print {marker!r}:\n" + "\n".join(service.lines[-30:])
                )
            time.sleep(0.05)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310  # a loopback URL we built
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main() -> None:
    ports = [int(p) for p in os.environ.get("CLUSTER_REPLICA_PORTS", "8101,8102,8103").split(",")]
    cluster = Cluster(
        front_port=int(os.environ.get("CLUSTER_FRONT_PORT", "8080")),
        replica_ports=ports,
        redis_port=int(os.environ.get("CLUSTER_REDIS_PORT", "6390")),
        app=os.environ.get("CLUSTER_APP", "web.demo.app:app"),
        echo=True,
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    PID_FILE.write_text(str(os.getpid()))
    try:
        cluster.start()
        print(
            f"\nSwitchboard cluster up: {cluster.url}/chat/ (HAProxy) -> replicas "
            + ", ".join(f"r{i + 1} :{p}" for i, p in enumerate(ports))
            + f", Redis :{cluster.redis_port}.\n"
            f"  SWITCHBOARD_REDIS_URL=redis://127.0.0.1:{cluster.redis_port}/0"
            " .venv/bin/switchboard sessions list\n"
            "  Stop with Ctrl-C or `make cluster-stop`.",
            flush=True,
        )
        stopping.wait()
    finally:
        print("stopping the cluster", flush=True)
        cluster.stop()
        PID_FILE.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
