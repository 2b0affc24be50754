"""A worked example of a real job queue (taskiq with its Redis broker) talking to chat sessions.

A chat handler enqueues `long_job` (`await long_job.kiq(session_id, text)`); a worker process
(`taskiq worker workers.taskiq_jobs:broker`) runs it and streams progress tokens and a final
message into the session through the bus, whichever replica holds the socket.
taskiq rather than arq: arq 0.28 pins redis-py below 6, taskiq-redis works with redis-py 8.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from taskiq import AsyncBroker, TaskiqEvents, TaskiqState
from taskiq_redis import ListQueueBroker, ListQueueClusterBroker, ListQueueSentinelBroker

from bus import get_settings
from bus.keys import Keys
from web import Message
from workers.client import Client


def _broker(url: str, queue: str) -> AsyncBroker:
    """The job queue on the bus's Redis, whichever topology `SWITCHBOARD_REDIS_URL` names."""
    scheme = urlsplit(url).scheme
    if scheme == "redis+sentinel":
        from bus.redis_backend import parse_sentinel_url

        sentinels, db, service, auth = parse_sentinel_url(url)
        return ListQueueSentinelBroker(sentinels, service, queue_name=queue, db=db, **auth)
    if scheme == "redis+cluster":
        host, port = urlsplit(url).netloc.rpartition("@")[2].split(",")[0].rsplit(":", 1)
        return ListQueueClusterBroker(f"redis://{host}:{port}", queue_name=queue)
    return ListQueueBroker(url, queue_name=queue)


_settings = get_settings()
broker = _broker(_settings.redis_url or "redis://127.0.0.1:6379/0", Keys(_settings.key_prefix).jobs())


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _connect(state: TaskiqState) -> None:
    state.switchboard = await Client().__aenter__()  # one bus connection per worker process


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _disconnect(state: TaskiqState) -> None:
    await state.switchboard.__aexit__(None, None, None)


@broker.task
async def long_job(session_id: str, text: str, steps: int = 5) -> None:
    """Report progress token by token, then the result, to the session that asked."""
    client: Client = broker.state.switchboard
    async with client.session(session_id):
        progress = Message(author="worker")
        for step in range(1, steps + 1):
            await progress.stream_token(f"step {step}/{steps} ")
        await progress.send()
        await Message(f"Job done: {text.upper()}", author="worker").send()
