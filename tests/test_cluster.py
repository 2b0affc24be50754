"""End to end through the local cluster (deploy/local/): clients connect through HAProxy, all three
replicas are restarted one by one (SIGTERM, drain, start, ready, next) while a worker sends, and every
receipted message arrives once, in order, on every client."""

import asyncio
import contextlib
import importlib.util
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from bus import offset_key
from tests.harness import ROOT, ChatClient, Process, Replica, free_port

CLIENTS = 20
DRAIN = "1.5"


def _load_cluster() -> Any:
    spec = importlib.util.spec_from_file_location(
        "deploy_local_cluster", ROOT / "deploy" / "local" / "cluster.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cluster(prefix: str) -> Iterator[Any]:
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        raise RuntimeError(
            "haproxy is not installed: run `make test` (it installs it) or apt-get install haproxy"
        )
    module = _load_cluster()
    started = module.Cluster(
        front_port=free_port(),
        replica_ports=[free_port() for _ in range(3)],
        redis_port=free_port(),
        app="tests.apps.app:app",
        env={"SWITCHBOARD_KEY_PREFIX": prefix, "SWITCHBOARD_DRAIN_SECONDS": DRAIN, "CHAT_PATH": "/chat"},
    )
    try:
        started.start()
        yield started
    finally:
        started.stop()


class Roamer:
    """One user: a chain of sockets through HAProxy, moving on each `draining` hint (or when the server
    closes the socket), resuming with the resume token and the last offset seen."""

    def __init__(self, front: Replica) -> None:
        self.front = front
        #: (the offset the socket resumed from, the socket); the first resumed from nothing.
        self.segments: list[tuple[str, ChatClient]] = []
        self.moving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.segments.append(("0-0", await self._open({})))

    async def _open(self, auth: dict[str, Any]) -> ChatClient:
        deadline = time.monotonic() + 20
        while True:
            client = ChatClient()
            try:
                await client.connect(self.front, auth)
            except (socketio.exceptions.ConnectionError, AssertionError):
                # Refused (`draining`) or cut by a replica going away: try again, HAProxy picks another.
                with contextlib.suppress(Exception):
                    await client.close()
                assert time.monotonic() < deadline, f"could not resume through HAProxy: {client.events}"
                await asyncio.sleep(0.2)
                continue
            self._listen(client)
            return client

    def _listen(self, client: ChatClient) -> None:
        @client.sio.on("draining")
        async def draining(data: Any) -> None:
            await client._record("draining", data)
            if self.moving is None or self.moving.done():
                self.moving = asyncio.create_task(self._move(client, data["reconnectAfterMs"] / 1000))

    async def _move(self, client: ChatClient, delay: float) -> None:
        with contextlib.suppress(AssertionError):
            await client.next("disconnect", timeout=delay)  # or the server closes it first
        cut = client.last_offset
        successor = await self._open(client.resume_auth())
        self.segments.append((cut, successor))

    def seen(self) -> list[int]:
        """What the user saw: each socket's messages up to where the next one resumed from."""
        outputs: list[str] = []
        for index, (_, client) in enumerate(self.segments):
            until = self.segments[index + 1][0] if index + 1 < len(self.segments) else None
            outputs += [
                m["output"]
                for m in client.received("new_message")
                if until is None or offset_key(m["offset"]) <= offset_key(until)
            ]
        return [int(o[2:]) for o in outputs if o.startswith("n=")]

    async def close(self) -> None:
        for _, client in self.segments:
            with contextlib.suppress(Exception):
                await client.close()


async def test_rolling_restart_through_haproxy_loses_nothing(cluster: Any, tmp_path: Path) -> None:
    front = Replica(process=None, port=cluster.front_port, path="/chat")  # type: ignore[arg-type]
    roamers = [Roamer(front) for _ in range(CLIENTS)]
    try:
        await asyncio.gather(*(r.start() for r in roamers))
        sessions = tmp_path / "sessions.txt"
        sessions.write_text("\n".join(r.segments[0][1].session_id for r in roamers))
        env = {k: v for k, v in cluster.env.items() if k.startswith("SWITCHBOARD_")}
        worker = Process(
            [sys.executable, "-m", "tests.apps.fanout", str(sessions), "0.1"], env=env, stdin=True
        )
        await asyncio.to_thread(worker.wait_for_line, "round 1")
        codes = []
        for index in range(3):
            codes.append(await asyncio.to_thread(cluster.restart_replica, index))
            # Everybody has moved off the restarted replica before the next one goes.
            await asyncio.wait_for(asyncio.gather(*(r.moving for r in roamers if r.moving)), 20)
        assert all(code in (0, -signal.SIGTERM) for code in codes), codes
        done = sum("round " in line for line in worker.lines)
        await asyncio.to_thread(worker.wait_for_count, "round ", done + 2)
        worker.tell("stop")
        await worker.finished()
        rounds = worker.last_json()["rounds"]
        for roamer in roamers:
            last = roamer.segments[-1][1]
            await last.next("new_message", lambda m: m["output"] == f"n={rounds - 1}", timeout=20)
        for roamer in roamers:
            assert roamer.seen() == list(range(rounds)), roamer.segments[0][1].session_id
        moves = [len(r.segments) - 1 for r in roamers]
        assert sum(moves) >= CLIENTS, f"clients should have moved at each restart of their replica: {moves}"
        print(f"\n{CLIENTS} clients, {rounds} rounds, moves per client {moves}, exit codes {codes}")
    finally:
        for roamer in roamers:
            await roamer.close()
