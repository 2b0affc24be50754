"""Graceful drain on SIGTERM: readiness fails at once, new handshakes are refused, clients are told when
to move and resume on another replica, nothing receipted is lost, and the process exits by itself."""

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bus import offset_key
from tests.harness import ChatClient, Process, Replica

#: Clients on the draining replica. 300 is the issue's figure and runs stably on a 2-core machine.
CLIENTS = 300
DRAIN = 3.0
BUCKET = 0.25


def histogram(times: list[float]) -> str:
    counts = Counter(int(t // BUCKET) for t in times)
    lines = []
    for bucket in range(max(counts) + 1):
        n = counts.get(bucket, 0)
        lines.append(f"{bucket * BUCKET:5.2f}-{(bucket + 1) * BUCKET:5.2f}s {n:4d} {'#' * (n // 2)}")
    return "\n".join(lines)


async def test_sigterm_drains_300_clients_onto_another_replica_losing_nothing(
    replicas: Callable[..., Replica], replica_env: dict[str, str], tmp_path: Path
) -> None:
    # Every client comes from 127.0.0.1: no per-address handshake limit for this crowd.
    env = {"SWITCHBOARD_DRAIN_SECONDS": str(DRAIN), "SWITCHBOARD_HANDSHAKES_PER_MINUTE": "0"}
    a, b = replicas(env=env), replicas(env=env)
    clients = [ChatClient() for _ in range(CLIENTS)]
    #: client -> (seconds after SIGTERM when it reconnected, when its resume completed, who closed A's socket)
    moved: dict[int, tuple[float, float, str]] = {}
    resumed: dict[int, tuple[str, ChatClient]] = {}
    sigterm_at = 0.0

    async def move(index: int, client: ChatClient, hint: dict[str, Any]) -> None:
        """Honour the hint: after reconnectAfterMs (or at once if the server closes the socket first),
        resume on B with the resume token and the last offset received. The resume opens a new
        python-socketio client (a new tab would do the same): reusing one whose server closes it at the
        same moment trips a python-socketio client race. A then closes the old socket (a takeover)."""
        try:
            await client.next("disconnect", timeout=hint["reconnectAfterMs"] / 1000)
            by = "server"
        except AssertionError:
            by = "client"
        left = time.monotonic() - sigterm_at  # when it reconnects, i.e. its handshake reaches B
        successor = ChatClient()
        resumed[index] = (client.last_offset, successor)
        await successor.connect(b, client.resume_auth())
        moved[index] = (left, time.monotonic() - sigterm_at, by)

    movers: list[asyncio.Task[None]] = []

    def listen(index: int, client: ChatClient) -> None:
        @client.sio.on("draining")
        async def draining(data: Any) -> None:
            await client._record("draining", data)
            movers.append(asyncio.create_task(move(index, client, data)))

    try:
        for start in range(0, CLIENTS, 25):
            chunk = list(enumerate(clients))[start : start + 25]
            for index, client in chunk:
                listen(index, client)
            await asyncio.gather(*(client.connect(a) for _, client in chunk))
        sessions = tmp_path / "sessions.txt"
        sessions.write_text("\n".join(c.session_id for c in clients))
        argv = [sys.executable, "-m", "tests.apps.fanout", str(sessions), "0.2"]
        worker = Process(argv, env=replica_env, name="fanout", stdin=True)
        await asyncio.to_thread(worker.wait_for_line, "round 1")

        sigterm_at = time.monotonic()
        a.process.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(a.process.wait_for_line, "draining:")
        ready = await a.aget("/chat/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "draining", ready.text
        refused = await ChatClient().refused(a)
        assert refused["data"]["reason"] == "draining", refused

        code = await asyncio.to_thread(a.process.proc.wait, DRAIN + 10)
        exited_after = time.monotonic() - sigterm_at
        assert code in (0, -signal.SIGTERM), f"replica A exited with {code}:\n{a.process.output()}"
        await asyncio.wait_for(asyncio.gather(*movers), 30)
        assert len(moved) == CLIENTS, f"{CLIENTS - len(moved)} clients never got `draining`"

        # A few more rounds while everybody is on B, then stop and check every client's messages.
        rounds_then = sum("round " in line for line in worker.lines)
        await asyncio.to_thread(worker.wait_for_count, "round ", rounds_then + 2)
        worker.tell("stop")
        await worker.finished()
        result = worker.last_json()
        last = result["rounds"] - 1
        for index, client in enumerate(clients):
            cut, successor = resumed[index]
            await successor.next("new_message", lambda m: m["output"] == f"n={last}", timeout=30)
            # What this user saw: the first socket up to the offset it resumed from, then the second.
            before = [
                m["output"]
                for m in client.received("new_message")
                if offset_key(m["offset"]) <= offset_key(cut)
            ]
            seen = [int(o[2:]) for o in before + successor.outputs()]
            assert seen == list(range(result["rounds"])), client.session_id
        assert sum(result["statuses"].values()) == CLIENTS * result["rounds"]

        times = sorted(t for t, _, _ in moved.values())
        done = sorted(t for _, t, _ in moved.values())
        print(
            f"\ndrain of {CLIENTS} clients over {DRAIN}s; A exited {exited_after:.2f}s after SIGTERM; "
            f"moved after the hint: {sum(by == 'client' for _, _, by in moved.values())}, "
            f"closed by the server first: {sum(by == 'server' for _, _, by in moved.values())}; "
            f"receipts {result['statuses']}\n"
            f"reconnects (handshakes to B) by time after SIGTERM:\n{histogram(times)}\n"
            f"resumes completed (`session` from B) by time after SIGTERM:\n{histogram(done)}"
        )
        # Spread over the window, not in one instant: at least four quarter-seconds hold reconnects, and
        # none holds half of them (bounds loose enough for a loaded 2-core machine, which bunches them).
        buckets = Counter(int(t // BUCKET) for t in times)
        assert len(buckets) >= 4 and max(buckets.values()) < CLIENTS / 2, histogram(times)
        assert times[-1] - times[0] > DRAIN / 2, histogram(times)
        assert exited_after < DRAIN + 5
    finally:
        for client in clients + [successor for _, successor in resumed.values()]:
            with contextlib.suppress(Exception):
                await client.close()


async def test_a_hook_still_running_at_the_drain_deadline_is_cancelled(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = replicas(env={"CHAT_MODULE": "hostile_chat.py", "SWITCHBOARD_DRAIN_SECONDS": "1"})
    client = await clients().connect(a)
    await client.sio.emit("client_message", {"message": {"output": "hang"}})
    await asyncio.to_thread(a.process.wait_for_line, "hanging")
    started = time.monotonic()
    a.process.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(a.process.proc.wait, 15)
    assert code in (0, -signal.SIGTERM), a.process.output()
    assert time.monotonic() - started < 1 + 5
    await asyncio.to_thread(a.process.wait_for_line, "the hanging hook was cancelled")
    await asyncio.to_thread(a.process.wait_for_line, "hooks: 0 finished, 1 cancelled")
