"""The layout holds: light imports for workers, no import circles, and one table of client events."""

import ast
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus import Settings
from tests.harness import ROOT, Replica, start_replica
from web import User, create_jwt
from web.protocol import EVENTS, check_custom_event, logged
from workers import Client

HEAVY = ("fastapi", "starlette", "pydantic", "socketio", "engineio", "uvicorn")


@pytest.mark.parametrize("module", ["bus", "workers", "web.message"])
def test_sending_code_imports_no_web_framework(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"`import {module}` loaded {out.stdout.strip()}"


def test_the_lazy_web_exports_still_load() -> None:
    code = "import web; print(web.mount_app.__module__, web.webhook_router.__module__, web.ChatServer)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["web.mount", "web.webhooks", "<class", "'web.server.ChatServer'>"]


def _imports(package: str) -> dict[str, set[str]]:
    """module -> project modules it imports (TYPE_CHECKING imports included), from the source."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = found
    return {m: {i for i in imported if i in graph and i != m} for m, imported in graph.items()}


@pytest.mark.parametrize("package", ["bus", "web", "workers"])
def test_no_import_circles(package: str) -> None:
    graph = _imports(package)
    graph.pop(package, None)  # the package's __init__ only re-exports
    for module in graph:
        graph[module].discard(package)
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dependency in sorted(graph[module]):
            if state.get(dependency) == 1:
                cycle = [*path[path.index(dependency) :], dependency]
                raise AssertionError(f"import circle: {' -> '.join(cycle)}")
            if dependency not in state:
                visit(dependency, [*path, dependency])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_every_protocol_event_is_refused_as_a_custom_event() -> None:
    for name in EVENTS:
        with pytest.raises(ValueError, match=r"protocol event"):
            check_custom_event(name)
    check_custom_event("report.ready")  # an ordinary custom event
    assert logged("report.ready") and logged("new_message") and not logged("stream_token")


async def test_workers_cannot_send_protocol_events() -> None:
    async with Client(Settings()) as client:
        for name in EVENTS:
            with pytest.raises(ValueError, match=r"protocol event"):
                await client.send_to_session("a" * 24, "x", event=name)
            with pytest.raises(ValueError):
                await client.broadcast("x", event=name)


AUTH_SECRET = "r" * 48


@pytest.fixture(scope="module")
def replica(redis_url: str) -> Iterator[Replica]:
    env = {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_KEY_PREFIX": f"ar{uuid.uuid4().hex[:8]}",
        "SWITCHBOARD_AUTH_SECRET": AUTH_SECRET,
        "SWITCHBOARD_REQUIRE_LOGIN": "false",
    }
    started = start_replica(env, name="events")
    yield started
    started.process.stop()


async def test_webhooks_refuse_protocol_events_with_422(replica: Replica) -> None:
    token = create_jwt(User("service:t"), scope="sessions:send", settings=Settings(auth_secret=AUTH_SECRET))
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        for name in EVENTS:
            body = {"content": "x", "event": name}
            response = await http.post("/hooks/broadcast", json=body, headers=headers)
            assert response.status_code == 422, (name, response.text)
            assert response.json()["error"] == "invalid_message"
        body = {"content": "x", "event": "report.ready"}
        ok = await http.post("/hooks/broadcast", json=body, headers=headers)
        assert ok.status_code == 202, ok.text


def test_protocol_doc_lists_every_event() -> None:
    text = (Path(ROOT) / "docs" / "protocol.md").read_text()
    missing = [name for name in EVENTS if f"`{name}`" not in text]
    assert not missing, f"docs/protocol.md does not describe {missing}"
