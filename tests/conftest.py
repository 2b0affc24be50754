from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from bus import Bus, Settings
from tests import harness
from tests.harness import ChatClient, Replica, start_replica
from tests.topologies import STARTERS, Topology

# No per-example deadline: on a loaded machine (2 shared cores, `make mutate`) an example that takes more
# than hypothesis's default 200 ms fails the test though nothing is wrong (a spurious kill under mutmut).
hypothesis_settings.register_profile("switchboard", deadline=None)
hypothesis_settings.load_profile("switchboard")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The whole run's logs hold no secret (tests/harness.py, `leaks`): fails the run, naming them."""
    found = harness.leaks(harness.STARTED)
    if found:
        print("\nSecrets in the logs of this run:\n  " + "\n  ".join(found))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis-topology",
        choices=sorted(STARTERS),
        default="single",
        help="the Redis every test uses unless it names one (single node, Sentinel, Cluster)",
    )


@pytest.fixture(scope="session")
def redis_topologies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Topology]]:
    """Each topology is started on first use and kept until the session ends."""
    started: dict[str, Topology] = {}

    def get(name: str) -> Topology:
        if name not in started:
            started[name] = STARTERS[name](tmp_path_factory.mktemp(f"redis-{name}"))
        return started[name]

    yield get
    for topology in started.values():
        topology.stop()


@pytest.fixture(scope="session")
def topology(request: pytest.FixtureRequest, redis_topologies: Callable[[str], Topology]) -> Topology:
    """The Redis topology of a test: `--redis-topology` (single by default), or the one a test
    names with `@pytest.mark.parametrize("topology", [...], indirect=True)`."""
    name = getattr(request, "param", None) or request.config.getoption("--redis-topology")
    return redis_topologies(name)


@pytest.fixture(scope="session")
def redis_url(topology: Topology) -> str:
    return topology.url


@pytest.fixture(scope="session")
def redis_port(redis_topologies: Callable[[str], Topology]) -> int:
    """The port of the single-node Redis (for tests that put a proxy in front of it)."""
    return int(redis_topologies("single").url.rsplit(":", 1)[1].split("/")[0])


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
