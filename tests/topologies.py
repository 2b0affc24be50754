"""Redis topologies started by the tests on free loopback ports: one node, a primary with a replica
watched by three Sentinels, and a Redis Cluster of three primaries (each with one replica).

Every process is started here and stopped by `stop()`; nothing touches the machine's own Redis.
Waiting for a topology to settle polls its state (CLUSTER INFO, SENTINEL ...) with a deadline: there
is no event to await.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.harness import Process, free_port, start_redis

SETTLE_TIMEOUT = 60.0
SERVICE = "switchboard"


def _until(what: str, check: Callable[[], Any], timeout: float = SETTLE_TIMEOUT) -> Any:
    """Poll `check` until it returns something truthy (errors count as not yet); fail loudly after
    `timeout` seconds."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            if found := check():
                return found
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.1)  # polling a server's state, bounded by the deadline
    raise RuntimeError(f"Redis topology: {what} did not happen within {timeout:g}s (last error: {last})")


def _admin(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)


@dataclass
class Topology:
    name: str
    url: str
    processes: list[Process] = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()

    def output(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.output()}" for p in self.processes)


def start_single() -> Topology:
    proc, port = start_redis()
    return Topology("single", f"redis://127.0.0.1:{port}/0", [proc])


@dataclass
class SentinelTopology(Topology):
    sentinel_ports: list[int] = field(default_factory=list)
    data_ports: list[int] = field(default_factory=list)
    guarded: bool = True

    def primary_port(self) -> int:
        _host, port = _admin(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def failover(self) -> int:
        """`SENTINEL FAILOVER`, then wait until every Sentinel names the new primary, it accepts
        writes and the old one follows it; returns the new primary's port."""
        old = self.primary_port()
        _admin(self.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", SERVICE)
        return self.wait_primary_moved_from(old)

    def wait_primary_moved_from(self, old: int) -> int:
        def moved() -> int | None:
            ports = {int(_admin(p).sentinel_get_master_addr_by_name(SERVICE)[1]) for p in self.sentinel_ports}
            new = ports.pop() if len(ports) == 1 else old
            return new if new != old and _admin(new).info("replication")["role"] == "master" else None

        new: int = _until("the Sentinels' failover", moved)
        _until("the old primary following the new one", lambda: _following(old, new))
        return new


def _following(port: int, primary: int) -> bool:
    info = _admin(port).info("replication")
    return (
        info["role"] == "slave"
        and int(info["master_port"]) == primary
        and info.get("master_link_status") == "up"
    )


def start_sentinel(tmp: Path, *, guard: bool = True) -> SentinelTopology:
    """A primary, one replica (`--replicaof`), three Sentinels (quorum 2, down after 1 s). With
    `guard`, a primary refuses writes while no replica follows it (`min-replicas-to-write 1`), as
    docs/deploy-redis.md recommends: an old primary stops accepting writes once its replica is
    promoted, instead of until the Sentinels demote it."""
    procs: list[Process] = []
    extra = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "5"] if guard else []
    try:
        primary, primary_port = start_redis(None, "--dir", _own_dir(tmp, "primary"), *extra)
        procs.append(primary)
        replica, replica_port = start_redis(
            None, "--dir", _own_dir(tmp, "replica"), "--replicaof", "127.0.0.1", str(primary_port), *extra
        )
        procs.append(replica)
        _until("the replica's first sync", lambda: _following(replica_port, primary_port))
        sentinel_ports = []
        for index in range(3):
            port = free_port()
            conf = tmp / f"sentinel-{index}-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
                "sentinel resolve-hostnames no\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            proc = Process([_binary(), str(conf), "--sentinel"], name=f"redis-sentinel-{index}")
            procs.append(proc)
            proc.wait_for_line("+monitor master")
            sentinel_ports.append(port)

        def known() -> bool:
            for port in sentinel_ports:
                admin = _admin(port)
                replicas = admin.execute_command("SENTINEL", "REPLICAS", SERVICE)
                others = admin.execute_command("SENTINEL", "SENTINELS", SERVICE)
                if len(replicas) != 1 or len(others) != 2:
                    return False
            return True

        _until("the Sentinels finding the replica and each other", known)
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    hosts = ",".join(f"127.0.0.1:{p}" for p in sentinel_ports)
    return SentinelTopology(
        "sentinel",
        f"redis+sentinel://{hosts}/0/{SERVICE}",
        procs,
        sentinel_ports=sentinel_ports,
        data_ports=[primary_port, replica_port],
        guarded=guard,
    )


@dataclass
class ClusterTopology(Topology):
    ports: list[int] = field(default_factory=list)
    #: Port -> its process, to kill a primary.
    by_port: dict[int, Process] = field(default_factory=dict)

    def primaries(self) -> list[int]:
        return [p for p in self.live_ports() if _admin(p).info("replication")["role"] == "master"]

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if self.by_port[p].proc.poll() is None]

    def replica_of(self, primary: int) -> int:
        for port in self.live_ports():
            info = _admin(port).info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == primary:
                return port
        raise RuntimeError(f"cluster node {primary} has no replica")

    def wait_ok(self) -> None:
        def ok() -> bool:
            for port in self.live_ports():
                if "cluster_state:ok" not in _admin(port).execute_command("CLUSTER", "INFO"):
                    return False
            return True

        _until("cluster_state:ok on every node", ok)


def start_cluster(tmp: Path, *, replicas: int = 1) -> ClusterTopology:
    """Three primaries (with `replicas` replica each), created with `redis-cli --cluster create`."""
    count = 3 * (1 + replicas)
    procs: list[Process] = []
    ports: list[int] = []
    try:
        for _ in range(count):
            port = _cluster_port()
            proc, _ = start_redis(
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(tmp / f"nodes-{port}.conf"),
                "--cluster-node-timeout",
                "2000",
                "--dir",
                _own_dir(tmp, str(port)),
            )
            procs.append(proc)
            ports.append(port)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed: `apt-get install redis-tools` (or `make test`)")
        nodes = [f"127.0.0.1:{p}" for p in ports]
        created = subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
        topology = ClusterTopology(
            "cluster",
            "redis+cluster://" + ",".join(nodes),
            procs,
            ports=ports,
            by_port=dict(zip(ports, procs, strict=True)),
        )
        topology.wait_ok()
        if replicas:
            _until(
                "every primary's replica in sync",
                lambda: all(
                    _admin(p).info("replication").get("master_link_status") == "up"
                    for p in ports
                    if _admin(p).info("replication")["role"] == "slave"
                ),
            )
        return topology
    except BaseException:
        for proc in procs:
            proc.stop()
        raise


def _cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher) is free too; Redis needs it <= 55535."""
    for _ in range(200):
        port = free_port()
        if port <= 55535 and _bindable(port + 10000):
            return port
    raise RuntimeError("no free loopback port pair (p, p + 10000) for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _own_dir(tmp: Path, name: str) -> str:
    """A node's working directory: a replica's full sync writes dump.rdb there."""
    path = tmp / name
    path.mkdir(exist_ok=True)
    return str(path)


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: `apt-get install redis-server` (or `make test`)")
    return binary


STARTERS: dict[str, Callable[[Path], Topology]] = {
    "single": lambda tmp: start_single(),
    "sentinel": start_sentinel,
    "cluster": start_cluster,
}
