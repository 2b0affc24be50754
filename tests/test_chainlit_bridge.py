"""The Chainlit bridge with the real Chainlit 2.12: its seed app (tests/apps/chainlit) on two uvicorn
replicas and under `uvicorn --workers 2`, real python-socketio clients speaking Chainlit's handshake,
a worker process, and Chainlit's own React page in Debian's chromium."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from bus import Bus, Settings
from tests.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, require_browser
from tests.harness import APPS, ChatClient, Process, Replica

CHAINLIT_APP = APPS / "chainlit"
#: Chainlit's login (password callback in my_cl_app.py) and the secret of its tokens.
LOGIN = {"CHAINLIT_AUTH_SECRET": "c" * 48}


def chainlit_replica(replicas: Callable[..., Replica], login: bool = True, **kwargs: Any) -> Replica:
    return replicas(app="main:app", path="/chainlit", cwd=CHAINLIT_APP, env=LOGIN if login else {}, **kwargs)


def user_message(output: str, thread_id: str = "") -> dict[str, Any]:
    """A user message step as Chainlit's React client sends it (ids are UUIDv4)."""
    return {
        "id": str(uuid.uuid4()),
        "threadId": thread_id,
        "name": "User",
        "type": "user_message",
        "output": output,
        "createdAt": datetime.now(UTC).isoformat(),
    }


@dataclass
class ChainlitClient(ChatClient):
    """A python-socketio client speaking the handshake of Chainlit's React client; records events."""

    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: The session's thread id, from its first message.
    thread_id: str = ""

    def __post_init__(self) -> None:
        @self.sio.on("*")
        async def record(event: str, data: Any = None) -> None:
            await self._record(event, data)

        @self.sio.on("ask")
        async def ask(data: Any) -> Any:
            # Chainlit's client answers a text ask with a user message step, as the Socket.IO ack.
            await self._record("ask", data)
            return user_message(await self._answers.get(), data["msg"]["threadId"])

    async def start(self, replica: Replica, token: str | None = None) -> ChainlitClient:
        """Connect as Chainlit's React client does, then announce the connection (on_chat_start)."""
        await self.sio.connect(
            replica.url,
            socketio_path=replica.socketio_path,
            transports=["websocket"],
            auth={
                "clientType": "webapp",
                "sessionId": self.session_id,
                "threadId": None,
                "userEnv": "{}",
                "chatProfile": None,
            },
            headers={"Cookie": f"access_token={token}"} if token else {},
            wait_timeout=10,
        )
        await self.sio.emit("connection_successful")
        hello = await self.next(
            "new_message", lambda m: m["output"] == f"Hello from session {self.session_id}"
        )
        self.thread_id = hello["threadId"]
        return self


@pytest.fixture
async def chainlit_clients() -> AsyncIterator[Callable[[], ChainlitClient]]:
    made: list[ChainlitClient] = []

    def make() -> ChainlitClient:
        made.append(ChainlitClient())
        return made[-1]

    yield make
    await asyncio.gather(*(client.close() for client in made))


async def token_for(replica: Replica, identifier: str) -> str:
    response = await replica.aget(f"/token/{identifier}")
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def assert_clean(*started: Replica) -> None:
    for replica in started:
        output = replica.process.output()
        assert "never awaited" not in output and "Traceback" not in output, output


async def holder(settings: Callable[..., Settings], session_id: str) -> str:
    """The replica id the registry names for the session."""
    async with Bus(settings(replica_id="test-reader")) as bus:
        record = await bus.registry.get(session_id)
    assert record is not None, f"session {session_id} is not in the registry"
    return record.replica


# -- the internals the bridge relies on -------------------------------------------------------------

CHECK = """
import json, sys
import chainlit.server, chainlit.session as s
from chainlit.session import WebsocketSession
import web.chainlit_bridge as bridge
from web.chainlit_bridge import ChainlitIncompatible, check_chainlit, TESTED_SERIES, CHAINLIT_VERSION

handlers = dict(chainlit.server.sio.handlers["/"])
check_chainlit()
result = {
    "version": CHAINLIT_VERSION,
    "tested": TESTED_SERIES,
    # Importing the bridge patches nothing.
    "unpatched": WebsocketSession.__dict__["get_by_id"].__func__.__module__ == "chainlit.session"
    and handlers == chainlit.server.sio.handlers["/"],
}
del s.ws_sessions_id
WebsocketSession.get_by_id = staticmethod(lambda session_id: None)
try:
    check_chainlit()
except ChainlitIncompatible as exc:
    result["changed"] = str(exc)
print(json.dumps(result))
"""


def test_the_chainlit_internals_the_bridge_relies_on_are_there() -> None:
    """Fails when a Chainlit upgrade moves an internal the bridge patches or reads."""
    out = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=CHAINLIT_APP, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, (
        "the Chainlit bridge's internals check failed; web/chainlit_bridge.py (INTERNALS) lists what it "
        f"relies on:\n{out.stdout}\n{out.stderr}"
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["version"].startswith(result["tested"] + "."), (
        f"Chainlit {result['version']} is installed; the bridge is tested with {result['tested']}.*: "
        "install `.[chainlit]` or update the bridge and TESTED_SERIES"
    )
    assert result["unpatched"], "importing web.chainlit_bridge must not patch Chainlit"
    changed = result["changed"]
    assert f"Chainlit {result['version']} is installed" in changed
    assert "ws_sessions_id" in changed and "WebsocketSession.get_by_id" in changed


# -- two replicas -----------------------------------------------------------------------------------


async def test_the_seed_examples_across_two_replicas(
    replicas: Callable[..., Replica],
    chainlit_clients: Callable[[], ChainlitClient],
    settings: Callable[..., Settings],
) -> None:
    a, b = chainlit_replica(replicas), chainlit_replica(replicas)
    assert (await b.aget("/app")).json() == {"message": "Hello World from main app"}
    tokens = await asyncio.gather(*(token_for(a, f"user{i}") for i in range(20)))
    clients = await asyncio.gather(*(chainlit_clients().start(a, token) for token in tokens))
    # The websocket context from the replica that does not hold the sockets: 20 of 20.
    responses = await asyncio.gather(*(b.aget(f"/hello/{c.session_id}") for c in clients))
    assert [(r.status_code, r.json()) for r in responses] == [(200, "Data sent to the websocket client")] * 20
    b_id = responses[0].headers["x-replica"]
    assert {r.headers["x-replica"] for r in responses} == {b_id}
    assert {await holder(settings, c.session_id) for c in clients} == {
        (await a.aget("/app")).headers["x-replica"]
    }
    assert b_id != (await a.aget("/app")).headers["x-replica"]
    for client in clients:
        await client.next("new_message", lambda m: m["output"] == "Hello World")
    # And from the replica holding them (Chainlit's own local path).
    assert (await a.aget(f"/hello/{clients[0].session_id}")).status_code == 200
    await clients[0].next("new_message", lambda m: m["output"] == "Hello World")
    # Unknown sessions: 404 JSON on both replicas, never a 500.
    for replica in (a, b):
        for unknown in (str(uuid.uuid4()), "nonexistent"):
            response = await replica.aget(f"/hello/{unknown}")
            assert response.status_code == 404, response.text
            assert response.json() == {"detail": "session not found", "sessionId": unknown}
    # HTTP context, Chainlit's auth dependency, and the chat module's own handler.
    response = await b.aget("/hello")
    assert response.status_code == 200 and response.text == "Hello World"
    response = await b.aget("/custom-auth", headers={"Authorization": f"Bearer {tokens[3]}"})
    assert response.json() == {"message": "Hello user3"}
    await clients[1].sio.emit("client_message", {"message": user_message("ping")})
    await clients[1].next("new_message", lambda m: m["output"] == "Received: ping")
    assert_clean(a, b)


async def test_ask_stream_steps_elements_actions_toasts_from_the_other_replica(
    replicas: Callable[..., Replica],
    chainlit_clients: Callable[[], ChainlitClient],
    settings: Callable[..., Settings],
) -> None:
    a, b = chainlit_replica(replicas), chainlit_replica(replicas)
    client = await chainlit_clients().start(a, await token_for(a, "ann"))
    assert await holder(settings, client.session_id) != (await b.aget("/app")).headers["x-replica"]
    # AskUserMessage asked on B: the client answers through the Socket.IO ack on A, B gets the answer.
    asking = asyncio.create_task(b.aget(f"/ask/{client.session_id}"))
    question = await client.next("ask")
    assert question["msg"]["output"] == "What is your name?" and question["spec"]["type"] == "text"
    client.answer("Ann")
    response = await asking
    assert response.status_code == 200 and response.json() == {"answer": "Ann"}
    await client.next("clear_ask")
    # Streamed tokens arrive in order.
    response = await b.aget(f"/stream/{client.session_id}?n=30")
    message_id = response.json()["id"]
    start = await client.next("stream_start", lambda s: s["id"] == message_id)
    tokens = [start["output"]]
    for _ in range(29):
        tokens.append((await client.next("stream_token", lambda t: t["id"] == message_id))["token"])
    assert tokens == [f"t{i} " for i in range(30)]
    final = await client.next("new_message", lambda m: m["id"] == message_id)
    assert final["output"] == "".join(tokens)
    # Steps, elements, actions and toasts.
    sent = (await b.aget(f"/rich/{client.session_id}")).json()
    step = await client.next("update_message", lambda s: s["id"] == sent["step"])
    assert step["output"] == "looked it up" and step["type"] == "tool"
    element = await client.next("element", lambda e: e["forId"] == sent["message"])
    assert element["name"] == "logo" and element["url"] == "https://example.invalid/logo.png"
    message = await client.next("new_message", lambda m: m["id"] == sent["message"])
    assert message["output"] == "rich"
    action = await client.next("action", lambda x: x["forId"] == sent["message"])
    assert action["name"] == "approve" and action["payload"] == {"value": 1}
    assert await client.next("toast") == {"message": "Saved", "type": "success"}
    # The stand-in took the real thread id from the registry.
    assert message["threadId"] == question["msg"]["threadId"] == final["threadId"] == client.thread_id
    assert_clean(a, b)


async def test_a_worker_reaches_a_chainlit_session(
    replicas: Callable[..., Replica],
    chainlit_clients: Callable[[], ChainlitClient],
    replica_env: dict[str, str],
) -> None:
    a = chainlit_replica(replicas)
    client = await chainlit_clients().start(a, await token_for(a, "bob"))
    worker = Process(
        [sys.executable, "worker.py", client.session_id, "Your report is ready"],
        env={**replica_env, **LOGIN},
        name="chainlit-worker",
        cwd=CHAINLIT_APP,
    )
    await worker.finished()
    assert worker.last_json() == {"sent": client.session_id}
    message = await client.next("new_message", lambda m: m["output"] == "Your report is ready")
    assert message["name"] == "worker"
    start = await client.next("stream_start")
    assert start["output"] == "from "
    assert [(await client.next("stream_token"))["token"] for _ in range(2)] == ["the ", "worker"]
    await client.next("new_message", lambda m: m["output"] == "from the worker")
    # An unknown session fails loudly in the worker.
    unknown = Process(
        [sys.executable, "worker.py", str(uuid.uuid4()), "lost"],
        env={**replica_env, **LOGIN},
        name="chainlit-worker-unknown",
        cwd=CHAINLIT_APP,
    )
    with pytest.raises(AssertionError, match="SessionNotFound"):
        await unknown.finished()


# -- uvicorn --workers 2 ----------------------------------------------------------------------------


async def test_the_seed_examples_under_two_workers(
    replicas: Callable[..., Replica],
    chainlit_clients: Callable[[], ChainlitClient],
    settings: Callable[..., Settings],
) -> None:
    server = chainlit_replica(replicas, workers=2)
    tokens = await asyncio.gather(*(token_for(server, f"w{i}") for i in range(12)))
    clients = await asyncio.gather(*(chainlit_clients().start(server, token) for token in tokens))
    holders = [await holder(settings, c.session_id) for c in clients]
    responses = await asyncio.gather(*(server.aget(f"/hello/{c.session_id}") for c in clients))
    assert [r.status_code for r in responses] == [200] * 12, [r.text for r in responses]
    for client in clients:
        await client.next("new_message", lambda m: m["output"] == "Hello World")
    crossed = sum(r.headers["x-replica"] != h for r, h in zip(responses, holders, strict=True))
    first, rounds = crossed, 1
    # The kernel may hand every connection to one worker; send more until the other serves one.
    while not crossed and rounds < 20:
        rounds += 1
        more = await asyncio.gather(*(server.aget(f"/hello/{c.session_id}") for c in clients))
        assert [r.status_code for r in more] == [200] * 12, [r.text for r in more]
        for client in clients:
            await client.next("new_message", lambda m: m["output"] == "Hello World")
        crossed = sum(r.headers["x-replica"] != h for r, h in zip(more, holders, strict=True))
    print(
        f"\nunder --workers 2: 12/12 /hello answered 200 and delivered ({first} of the first 12 served by "
        f"the worker not holding the socket; {crossed} of 12 in round {rounds})"
    )
    assert crossed, "no /hello request reached the worker that does not hold the socket"
    # An ask from whichever worker gets the request.
    asking = asyncio.create_task(server.aget(f"/ask/{clients[0].session_id}"))
    await clients[0].next("ask")
    clients[0].answer("twelve")
    assert (await asking).json() == {"answer": "twelve"}
    assert (await server.aget(f"/hello/{uuid.uuid4()}")).status_code == 404
    assert_clean(server)


# -- Chainlit's own page in a real browser --------------------------------------------------------


async def test_chainlit_page_shows_a_message_sent_through_the_other_replica(
    replicas: Callable[..., Replica], settings: Callable[..., Settings]
) -> None:
    """Chainlit's bundled React frontend (Debian's chromium, Playwright) on replica A; B sends."""
    async_playwright = require_browser()
    a, b = chainlit_replica(replicas, login=False), chainlit_replica(replicas, login=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1100, "height": 760})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            await page.goto(f"{a.url}/chainlit/")
            # on_chat_start greets the page's session: its id is in the greeting and in the cookie.
            greeting = page.get_by_text(re.compile(r"Hello from session [0-9a-f-]{36}"))
            await greeting.wait_for(timeout=30_000)
            session_id = (await greeting.inner_text()).split()[-1]
            cookies = {c["name"]: c["value"] for c in await context.cookies()}
            assert cookies.get("X-Chainlit-Session-id") == session_id, cookies
            assert await holder(settings, session_id) == (await a.aget("/app")).headers["x-replica"]
            response = await b.aget(f"/hello/{session_id}")
            assert response.status_code == 200, response.text
            await page.get_by_text("Hello World", exact=True).wait_for(timeout=15_000)
        finally:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            path = SCREENSHOTS / "chainlit-page-through-the-other-replica.png"
            await page.screenshot(path=str(path))
            print(f"\nscreenshot: {path}")
            await context.close()
            await browser.close()
    assert not errors, f"uncaught errors in Chainlit's page: {errors}"
    assert_clean(a, b)
