"""Liveness and readiness on real replicas: ready after start, unready when the bus listener is deaf
or cut off from Redis (a TCP proxy in between does it), and ready again when it hears again."""

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from bus import Settings
from tests.harness import Replica
from tests.proxy import RedisProxy
from web.health import Health
from web.server import ChatServer

CUT_OFF = {"subscription_lost", "bus_unavailable", "probe_timeout"}


@pytest.fixture
def proxy(redis_port: int) -> Iterator[RedisProxy]:
    proxy = RedisProxy(redis_port)
    yield proxy
    proxy.close()


async def ready_within(replica: Replica, seconds: float, path: str = "/chat/readyz") -> httpx.Response:
    """Poll readiness until it answers 200 (the listener reconnects with a backoff of up to 2 s)."""
    deadline = time.monotonic() + seconds
    while True:
        response = await replica.aget(path)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.1)


async def test_liveness_and_readiness_answer_json_after_start(replicas: Callable[..., Replica]) -> None:
    a = replicas()
    alive = await a.aget("/chat/healthz")
    assert alive.status_code == 200 and alive.json()["status"] == "alive"
    ready = await a.aget("/chat/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready" and body["probeMs"] >= 0 and body["sessions"] == 0
    assert body["replica"] == alive.json()["replica"]


async def test_paths_are_configurable(replicas: Callable[..., Replica]) -> None:
    a = replicas(env={"SWITCHBOARD_HEALTH_PATH": "/livez", "SWITCHBOARD_READY_PATH": "/ops/ready"})
    assert (await a.aget("/livez")).status_code == 200
    assert (await a.aget("/ops/ready")).json()["status"] == "ready"
    assert (await a.aget("/chat/readyz")).status_code == 404


async def test_a_deaf_listener_fails_readiness_and_recovers(
    replicas: Callable[..., Replica], replica_env: dict[str, str], proxy: RedisProxy
) -> None:
    env = {"SWITCHBOARD_REDIS_URL": proxy.url, "SWITCHBOARD_READY_TIMEOUT_SECONDS": "0.5"}
    a = replicas(env=env)
    assert (await a.aget("/chat/readyz")).status_code == 200
    proxy.deafen()  # connected, subscribed as far as Redis knows, but hears nothing
    deaf = await a.aget("/chat/readyz")
    assert deaf.status_code == 503, deaf.text
    assert deaf.json()["reason"] == "probe_timeout" and deaf.json()["status"] == "unready"
    assert (await a.aget("/chat/healthz")).status_code == 200  # alive all the same
    proxy.hear()
    again = await a.aget("/chat/readyz")
    assert again.status_code == 200, again.text


async def test_a_replica_cut_off_from_redis_fails_readiness_until_it_is_back(
    replicas: Callable[..., Replica], proxy: RedisProxy
) -> None:
    a = replicas(env={"SWITCHBOARD_REDIS_URL": proxy.url, "SWITCHBOARD_READY_TIMEOUT_SECONDS": "0.5"})
    assert (await a.aget("/chat/readyz")).status_code == 200
    proxy.cut()
    cut = await a.aget("/chat/readyz")
    assert cut.status_code == 503 and cut.json()["reason"] in CUT_OFF, cut.text
    await asyncio.to_thread(a.process.wait_for_line, "bus subscription lost")
    lost = await a.aget("/chat/readyz")
    assert lost.status_code == 503 and lost.json()["reason"] in CUT_OFF, lost.text
    proxy.restore()
    back = await ready_within(a, 10)
    assert back.status_code == 200, back.text


async def test_readiness_says_starting_before_the_server_runs(settings: Callable[..., Settings]) -> None:
    server = ChatServer(settings())
    health = Health(server)
    assert (await health.readiness()).reason == "starting"
    async with server:
        await health.start()
        assert (await health.readiness()).ready
        health.drain()
        result = await health.readiness()
        assert not result.ready and result.reason == "draining"
