"""The seed's examples as users copy them (tests/apps/seed: only the import lines differ), mounted at
/chainlit, across two replicas and under `uvicorn --workers 2`."""

import asyncio
from collections.abc import Callable

from bus import Settings
from tests.harness import APPS, ChatClient, Replica
from web import User, create_jwt

SEED = APPS / "seed"
SECRET = "s" * 48
ENV = {"SWITCHBOARD_AUTH_SECRET": SECRET, "SWITCHBOARD_REQUIRE_LOGIN": "false"}


def seed_replica(replicas: Callable[..., Replica], **kwargs: object) -> Replica:
    return replicas(app="main:app", path="/chainlit", cwd=SEED, env=ENV, **kwargs)


def assert_no_unawaited_coroutines(*started: Replica) -> None:
    for replica in started:
        output = replica.process.output()
        assert "never awaited" not in output and "Traceback" not in output, output


async def test_the_seed_examples_run_verbatim_across_two_replicas(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a, b = seed_replica(replicas), seed_replica(replicas)
    assert (await b.aget("/app")).json() == {"message": "Hello World from main app"}
    client = await clients().start(a)
    await client.next("new_message", lambda m: m["output"] == f"Hello from session {client.session_id}")
    # The websocket context from the replica that does not hold the socket, plain (not awaited) calls.
    for _ in range(20):
        response = await b.aget(f"/hello/{client.session_id}")
        assert response.status_code == 200 and response.json() == "Data sent to the websocket client"
    for _ in range(20):
        await client.next("new_message", lambda m: m["output"] == "Hello World")
    # And from the replica holding it.
    assert (await a.aget(f"/hello/{client.session_id}")).status_code == 200
    await client.next("new_message", lambda m: m["output"] == "Hello World")
    # An unknown session: 404 JSON on both, never a 500 or a silent success.
    for replica in (a, b):
        response = await replica.aget("/hello/no-such-session-0123456789")
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == "session not found"
    # HTTP context: succeeds, reaches no socket.
    response = await b.aget("/hello")
    assert response.status_code == 200 and response.text == "Hello World"
    # Auth: the same kind of token as the chat's.
    token = create_jwt(User(identifier="USERNAME"), settings=Settings(auth_secret=SECRET))
    response = await b.aget("/custom-auth", headers={"Authorization": f"Bearer {token}"})
    assert response.json() == {"message": "Hello USERNAME"}
    assert (await b.aget("/custom-auth")).status_code == 401
    # The chat module's own handler.
    await client.sio.emit("client_message", {"message": {"output": "ping"}})
    await client.next("new_message", lambda m: m["output"] == "Received: ping")
    assert not [
        m for m in client.received("new_message") if m["output"] == "Hello World" and "offset" not in m
    ]
    assert_no_unawaited_coroutines(a, b)


async def test_the_seed_examples_under_two_workers(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    server = seed_replica(replicas, workers=2)
    client = await clients().start(server)
    await client.next("new_message", lambda m: m["output"].startswith("Hello from session"))
    responses = await asyncio.gather(*(server.aget(f"/hello/{client.session_id}") for _ in range(12)))
    assert [r.status_code for r in responses] == [200] * 12
    for _ in range(12):
        await client.next("new_message", lambda m: m["output"] == "Hello World")
    for _ in range(4):  # whichever worker answers
        response = await server.aget("/hello/no-such-session-0123456789")
        assert response.status_code == 404 and response.json()["detail"] == "session not found"
    assert_no_unawaited_coroutines(server)
