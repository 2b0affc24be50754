"""The worked job-queue example with a real taskiq worker process."""

import asyncio
import sys
from collections.abc import Callable

from tests.harness import ChatClient, Process, Replica


async def test_a_queued_job_streams_progress_to_a_socket_on_another_replica(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    a, b = replicas(), replicas()
    worker = Process(
        [sys.executable, "-m", "taskiq", "worker", "workers.taskiq_jobs:broker", "--workers", "1"],
        env=replica_env,
        name="taskiq-worker",
    )
    try:
        await asyncio.to_thread(worker.wait_for_line, "Listening started")
        client = await clients().connect(b)
        # The chat handler runs on replica B (which holds the socket) and enqueues the job.
        await client.sio.emit(
            "client_message", {"message": {"id": "j1", "output": "/job report", "type": "user_message"}}
        )
        await client.next("new_message", lambda m: m["output"] == "Job queued")
        started = await client.next("stream_start", lambda m: m["name"] == "worker")
        final = await client.next("update_message", lambda m: m["id"] == started["id"])
        await client.next("new_message", lambda m: m["output"] == "Job done: REPORT")
        tokens = [t["token"] for t in client.received("stream_token") if t["id"] == started["id"]]
        # In order; tokens sent within SWITCHBOARD_STREAM_COALESCE_SECONDS of each other arrive joined.
        assert started["output"] + "".join(tokens) == "".join(f"step {i}/5 " for i in range(1, 6))
        assert started["output"] == "step 1/5 " and 1 <= len(tokens) <= 4
        assert final["output"] == "".join(f"step {i}/5 " for i in range(1, 6)) and final["streaming"] is False
        # Replica A holds no session: none of the job's envelopes reached it.
        assert (await a.aget("/stats")).json()["received"] == 0
    finally:
        worker.stop()
        print(worker.output())
