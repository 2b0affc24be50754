"""Prometheus metrics scraped from real replicas after real traffic, also under `uvicorn --workers 2`."""

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bus import Settings
from tests.harness import ChatClient, Process, Replica
from web import User, create_jwt

SECRET = "m" * 48

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(replica: Replica) -> Samples:
    response = await replica.aget("/chat/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_a_replica_counts_its_traffic(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    a = replicas(env={"SWITCHBOARD_AUTH_SECRET": SECRET, "SWITCHBOARD_REQUIRE_LOGIN": "false"})
    first, second = await clients().connect(a), await clients().connect(a)
    # Sends made by the replica itself (an endpoint), and by a worker process.
    for text in ("one", "two", "three"):
        assert (await a.aget(f"/say/{first.session_id}/{text}")).status_code == 200
    await first.next("new_message", lambda m: m["output"] == "three")
    argv = [sys.executable, "-m", "tests.apps.sender", second.session_id, "5"]
    await Process(argv, env=replica_env, name="sender").finished()
    await second.next("new_message", lambda m: m["output"] == "n=4")
    # A resume that replays two messages sent while away.
    await second.sio.disconnect()
    await asyncio.to_thread(a.process.wait_for_line, f"session {second.session_id} detached")
    await Process([*argv[:-1], "2"], env=replica_env, name="sender").finished()
    resumed = await clients().connect(a, second.resume_auth())
    assert (await resumed.next("replayed"))["count"] == 2
    # Webhooks: one accepted, one refused.
    token = create_jwt(User("service:t"), scope="sessions:send", settings=Settings(auth_secret=SECRET))
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
        ok = await http.post(
            f"/hooks/sessions/{first.session_id}/messages",
            json={"content": "hook"},
            headers={"authorization": f"Bearer {token}"},
        )
        assert ok.status_code == 202, ok.text
        bad = await http.post(f"/hooks/sessions/{first.session_id}/messages", json={"content": "x"})
        assert bad.status_code == 401
    # A question asked by the replica, answered.
    asking = asyncio.create_task(a.aget(f"/ask/{first.session_id}"))
    await first.next("ask")
    first.answer("Ann")
    assert (await asking).json() == {"answer": {"output": "Ann"}}
    assert (await a.aget("/chat/readyz")).status_code == 200

    samples = await scrape(a)
    assert value(samples, "switchboard_sessions_held") == 2
    assert value(samples, "switchboard_sockets") == 2
    # 3 from /say and 1 from the webhook, all delivered live; the worker's sends are counted by the worker.
    assert value(samples, "switchboard_deliveries_total", event_class="message", outcome="delivered") == 4
    # Emitted to sockets: 3 + 5 + 2 replayed + 1 hook + the ask's message; no duplicates here.
    assert value(samples, "switchboard_socket_emits_total", event_class="message", outcome="emitted") >= 11
    assert value(samples, "switchboard_delivery_lag_seconds_count") >= 11
    assert value(samples, "switchboard_replays_total") == 1
    assert value(samples, "switchboard_replayed_messages_total") == 2
    assert value(samples, "switchboard_replay_truncations_total") == 0
    assert value(samples, "switchboard_webhook_requests_total", status="202") == 1
    assert value(samples, "switchboard_webhook_requests_total", status="401") == 1
    assert value(samples, "switchboard_asks_total", outcome="answered") == 1
    assert value(samples, "switchboard_redis_command_seconds_count", command="send") >= 4
    assert value(samples, "switchboard_ready") == 1
    assert value(samples, "switchboard_bus_reconnects_total") == 0
    print(
        "\n".join(line for line in (await a.aget("/chat/metrics")).text.splitlines() if "switchboard" in line)
    )


async def test_metrics_add_up_across_uvicorn_workers(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], tmp_path: Path
) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    a = replicas(workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    connected = [await clients().connect(a) for _ in range(6)]
    for client in connected:
        assert (await a.aget(f"/say/{client.session_id}/hi")).status_code == 200
    for client in connected:
        await client.next("new_message", lambda m: m["output"] == "hi")
    pids = {(await a.aget("/stats")).json()["replica"] for _ in range(20)}
    assert len(pids) == 2, "the scrapes should reach both workers"
    # Whichever worker answers, the figures are those of both; gauges are sampled every second.
    for _ in range(6):
        samples = await scrape(a)
        assert value(samples, "switchboard_deliveries_total", outcome="delivered") == 6
        assert value(samples, "switchboard_socket_emits_total", outcome="emitted") == 6
    # Gauges are sampled every second by each worker: wait until both have, then it holds on every scrape.
    deadline = time.monotonic() + 10
    while value(await scrape(a), "switchboard_sessions_held") != 6:
        assert time.monotonic() < deadline, "the workers' session gauges never added up to 6"
        await asyncio.sleep(0.2)
    for _ in range(4):
        assert value(await scrape(a), "switchboard_sessions_held") == 6
