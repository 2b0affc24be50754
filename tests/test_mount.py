"""mount_app and the seed examples, with the chat at a sub-path and at the root path."""

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from bus import Settings
from tests.harness import APPS, ChatClient, Process, Replica, free_port
from web import ContextError, Message, User, create_jwt, init_http_context, mount_app
from workers import send_message

SECRET = "m" * 48


@pytest.mark.parametrize("path", ["/chat", ""])
async def test_seed_examples_at_sub_path_and_root(
    path: str, replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    env = {"SWITCHBOARD_AUTH_SECRET": SECRET, "SWITCHBOARD_REQUIRE_LOGIN": "false"}
    a, b = replicas(path=path, env=env), replicas(path=path, env=env)
    # 1. The parent app's own routes keep working beside the mounted chat.
    for replica in (a, b):
        assert (await replica.aget("/")).json() == {"app": "parent"}
    client = await clients().start(a)
    await client.next("new_message", lambda m: m["output"] == f"started {client.session_id}")
    # 2. HTTP context: the send succeeds and reaches no socket.
    assert (await b.aget("/http-hello")).json() == {"sent": True}
    # 3. Websocket context, from the other replica.
    assert (await b.aget(f"/hello/{client.session_id}")).status_code == 200
    await client.next("new_message", lambda m: m["output"] == "Hello World")
    assert not [m for m in client.received("new_message") if m["output"] == "Hello from HTTP"]
    # 4. Auth: a token minted in this process opens the protected endpoint on a replica.
    token = create_jwt(User(identifier="USERNAME"), settings=Settings(auth_secret=SECRET))
    response = await b.aget("/custom-auth", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json() == {"identifier": "USERNAME"}
    assert (await b.aget("/custom-auth")).status_code == 401
    # The chat module's own handler, on the replica holding the socket.
    assert (await client.say("ping"))["output"] == "echo 1: ping"
    assert client.received("task_start") and client.received("task_end")


async def test_mount_hooks_the_bus_into_the_parent_lifespan() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def parent_lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("parent up")
        yield
        events.append("parent down")

    app = FastAPI(lifespan=parent_lifespan)
    server = mount_app(app, APPS / "chat.py", path="/chat")
    assert not server.running
    async with app.router.lifespan_context(app):
        assert server.running and events == ["parent up"]
    assert not server.running and events == ["parent up", "parent down"]


def test_mount_rejects_missing_and_non_python_targets(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        mount_app(FastAPI(), tmp_path / "missing.py")
    (tmp_path / "chat.txt").write_text("x = 1")
    with pytest.raises(ValueError, match=r"must be a \.py file"):
        mount_app(FastAPI(), tmp_path / "chat.txt")
    with pytest.raises(ValueError, match="must start with '/'"):
        mount_app(FastAPI(), APPS / "chat.py", path="chat")


async def test_sending_outside_any_context_is_a_clear_error() -> None:
    async def send() -> None:
        await Message("lost?").send()

    with pytest.raises(ContextError, match="init_http_context"):
        await asyncio.create_task(send())  # a fresh task: no context inherited from other tests

    async def http_send() -> int:
        init_http_context()
        await Message("to nobody").send()
        return 1

    assert await asyncio.create_task(http_send()) == 1


async def test_demo_command_on_the_in_memory_bus(clients: Callable[[], ChatClient]) -> None:
    port = free_port()
    demo = Process(
        [sys.executable, "-m", "web.cli", "demo", "--port", str(port)],
        env={"SWITCHBOARD_REDIS_URL": ""},
        name="demo",
    )
    try:
        await asyncio.to_thread(demo.wait_for_line, "Uvicorn running on")
        assert "in-memory bus" in demo.output()
        replica = Replica(demo, port, "/chat")
        client = await clients().start(replica)
        await client.next("new_message", lambda m: client.session_id in m["output"])
        await client.sio.emit(
            "client_message", {"message": {"id": "1", "output": "hi", "type": "user_message"}}
        )
        first = await client.next("stream_start")
        assert first["streaming"] is True
        final = await client.next("update_message")
        assert final["id"] == first["id"] and final["output"].strip() == "You said: hi"
        assert len(client.received("stream_token")) == 2
        assert (await replica.aget(f"/hello/{client.session_id}")).status_code == 200
        await client.next("new_message", lambda m: m["output"] == "Hello World")
        assert (await replica.aget(f"/hello/{'U' * 24}")).status_code == 404
    finally:
        demo.stop()


async def test_memory_bus_reaches_the_loop_from_a_worker_thread(
    clients: Callable[[], ChatClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded bus is process-wide: a synchronous send from another thread gets delivered."""
    from tests.apps.app import app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)  # uvicorn.Server exposes a flag, not an event
        client = await clients().connect(Replica(None, port, "/chat"))  # type: ignore[arg-type]
        await asyncio.to_thread(send_message, client.session_id, "from a thread")
        await client.next("new_message", lambda m: m["output"] == "from a thread")
        with pytest.raises(RuntimeError, match="session_context"):
            send_message(client.session_id, "from the loop")
    finally:
        server.should_exit = True
        await serving
