from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from bus import Bus, Settings
from tests.harness import ChatClient, Replica, start_redis, start_replica


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    proc, port = start_redis()
    yield port
    proc.stop()


@pytest.fixture(scope="session")
def redis_url(redis_port: int) -> str:
    return f"redis://127.0.0.1:{redis_port}/0"


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own per test, so tests never see each other's keys or channels."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        return Settings(**{"redis_url": redis_url, "key_prefix": prefix, **overrides})  # type: ignore[arg-type]

    return make


@pytest.fixture
async def bus(settings: Callable[..., Settings]) -> AsyncIterator[Bus]:
    async with Bus(settings(replica_id="test-bus")) as bus:
        yield bus


@pytest.fixture
def replica_env(redis_url: str, prefix: str) -> dict[str, str]:
    # A short drain: a replica stopped (SIGTERM) with clients still connected moves them within 2 s.
    return {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_KEY_PREFIX": prefix,
        "SWITCHBOARD_DRAIN_SECONDS": "2",
    }


@pytest.fixture
def replicas(replica_env: dict[str, str]) -> Iterator[Callable[..., Replica]]:
    """Start uvicorn replicas sharing this test's Redis prefix; all are stopped afterwards."""
    started: list[Replica] = []

    def start(**kwargs: object) -> Replica:
        env = {**replica_env, **kwargs.pop("env", {})}  # type: ignore[dict-item]
        replica = start_replica(env, name=f"replica-{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.process.stop()
        print(f"--- {replica.process.name} output ---\n{replica.process.output()}")


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[], ChatClient]]:
    made: list[ChatClient] = []

    def make() -> ChatClient:
        client = ChatClient()
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()
