"""The package works outside this repository: `python -m build` makes an sdist and, from that sdist (no
node_modules there), a wheel; both carry the Socket.IO browser client and py.typed. The wheel, installed
into a fresh virtualenv in a temporary directory, serves a working chat page for an app whose chat module
lives in another temporary directory. Without the client (a broken build), the page says so on screen and
the server logs one line.

The fresh virtualenv gets the third-party dependencies from this repository's virtualenv through a .pth
line (installing them again would take minutes); the switchboard packages themselves come from the wheel,
which the test checks (`web.__file__` of the running server is inside the fresh virtualenv).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
import socketio

from tests.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.harness import free_port

ROOT = Path(__file__).resolve().parent.parent
NPM_CLIENT = ROOT / "node_modules" / "socket.io-client"
CLIENT = ("socket.io.min.js", "socket.io.min.js.map")
#: Files every wheel and sdist must hold, below the project root.
SHIPPED = [f"web/static/vendor/{name}" for name in CLIENT]
SHIPPED += [f"{package}/py.typed" for package in ("bus", "web", "workers")]
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".map": "application/json",
}
#: What the server logs, once, when the package lacks the client (web/page.py).
MISSING_LOG = "the Socket.IO browser client (socket.io.min.js) is missing"

CHAT_MODULE = """
from web import Message, on_message


@on_message
async def echo(message: Message) -> None:
    await Message(f"echo: {message.content}").send()
"""
APP_MODULE = """
import bus
import web
import workers
from fastapi import FastAPI
from web import mount_app

app = FastAPI()


@app.get("/where")
def where() -> dict[str, str]:
    return {"bus": bus.__file__, "web": web.__file__, "workers": workers.__file__}


mount_app(app, "my_chat.py", path="/chat")
"""


def clean_env() -> dict[str, str]:
    """The environment for the fresh virtualenv: nothing that would add this checkout or its settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.pop("PYTHONPATH", None)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run(args: list[str | Path], what: str, timeout: float = 120, **kwargs: object) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build` of this checkout: the sdist, then the wheel built from that sdist."""
    if importlib.util.find_spec("build") is None:
        pytest.fail("the `build` package is missing: run `.venv/bin/pip install -e '.[dev]'`", pytrace=False)
    out = tmp_path_factory.mktemp("dist")
    log = run([sys.executable, "-m", "build", "--outdir", out, ROOT], "python -m build", timeout=300)
    assert "Building wheel from sdist" in log, log  # so the sdist alone is enough to make the wheel
    return out


def one(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {directory}, found {found}"
    return found[0]


def pinned_client(name: str) -> bytes:
    """The client file of the socket.io-client version that package-lock.json pins (the build ran npm ci)."""
    lock = json.loads((ROOT / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/socket.io-client"]["version"]
    installed = json.loads((NPM_CLIENT / "package.json").read_text())["version"]
    assert installed == pinned, f"node_modules has socket.io-client {installed}, the lock pins {pinned}"
    return (NPM_CLIENT / "dist" / name).read_bytes()


def test_sdist_ships_the_client_and_py_typed(dist: Path) -> None:
    with tarfile.open(one(dist, "*.tar.gz")) as sdist:
        files = {m.name.split("/", 1)[1]: m for m in sdist.getmembers() if m.isfile()}
        for name in SHIPPED:
            assert name in files, f"the sdist lacks {name}"
        for name in CLIENT:
            data = sdist.extractfile(files[f"web/static/vendor/{name}"])
            assert data is not None and data.read() == pinned_client(name), name
    assert not any(name.startswith("node_modules/") for name in files)


def test_wheel_ships_the_client_and_py_typed(dist: Path) -> None:
    with zipfile.ZipFile(one(dist, "*.whl")) as wheel:
        names = set(wheel.namelist())
        for name in SHIPPED:
            assert name in names, f"the wheel lacks {name}"
        for name in CLIENT:
            assert wheel.read(f"web/static/vendor/{name}") == pinned_client(name), name


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the repository with the wheel installed; returns its python."""
    home = tmp_path_factory.mktemp("venv")
    assert not home.is_relative_to(ROOT)
    run([sys.executable, "-m", "venv", "--without-pip", home / "venv"], "python -m venv")
    python = home / "venv" / "bin" / "python"
    install = ["install", "--no-deps", "--no-index", "--quiet", one(dist, "*.whl")]
    run([sys.executable, "-m", "pip", "--python", python, *install], "pip install", cwd=home, env=clean_env())
    # Then the dependencies (after the install: pip would take this checkout's editable install, whose
    # metadata is in that directory, for the wheel, and skip it). A directory on sys.path, not a site dir,
    # so the editable install's own .pth file is not processed there.
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = run([python, "-c", where], "sysconfig", cwd=home, env=clean_env())
    Path(purelib.strip(), "switchboard-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


class Server:
    """uvicorn serving the test app from `app_dir` with the fresh virtualenv's python; output collected."""

    def __init__(self, python: Path, app_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [python, "-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [str(a) for a in args],
            cwd=app_dir,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 30
        while not any("Application startup complete" in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                output = "\n".join(self.lines)
                pytest.fail(f"uvicorn did not start (exit code {self.proc.poll()}):\n{output}")
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """The application: a main module and a chat module in a temporary directory outside the repository."""
    assert not tmp_path.is_relative_to(ROOT)
    (tmp_path / "my_chat.py").write_text(CHAT_MODULE)
    (tmp_path / "main.py").write_text(APP_MODULE)
    return tmp_path


@pytest.fixture
def serve(venv: Path, app_dir: Path) -> Iterator[Server]:
    server = Server(venv, app_dir)
    yield server
    server.stop()


class References(HTMLParser):
    """Every `src` and `href` of a page, except links within the page (`#...`)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.urls.append(value)


def check_asset(client: httpx.Client, url: str) -> httpx.Response:
    response = client.get(url)
    assert response.status_code == 200, f"{url}: {response.status_code} {response.text[:200]}"
    kind = CONTENT_TYPES[Path(url).suffix]
    assert response.headers["content-type"].split(";")[0] == kind, (url, response.headers["content-type"])
    return response


async def chat_round_trip(url: str) -> list[object]:
    """A real Socket.IO client, as the page connects: the session, then an echo of a message."""
    async with socketio.AsyncSimpleClient() as sio:
        await sio.connect(url, socketio_path="/chat/ws/socket.io", transports=["websocket"], wait_timeout=10)
        events = [await sio.receive(timeout=10)]
        message = {"id": "m-1", "output": "hi there", "type": "user_message"}
        await sio.emit("client_message", {"message": message})
        while not any("echo: hi there" in str(event) for event in events):
            events.append(await sio.receive(timeout=10))
        return events


async def page_text(url: str, ready: str) -> str:
    """The page as chromium shows it once `ready` (a CSS selector) is visible; fails on script errors."""
    async with require_browser()() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(url)
            await page.locator(ready).first.wait_for(timeout=15_000)
            assert not errors, errors
            return str(await page.locator("body").inner_text())
        finally:
            await browser.close()


def test_the_installed_wheel_serves_a_working_chat_page(serve: Server, venv: Path) -> None:
    with httpx.Client(base_url=serve.url, timeout=10) as client:
        where = client.get("/where").json()
        site = venv.parent.parent
        for package, file in where.items():
            assert Path(file).is_relative_to(site), f"{package} imported from {file}, not the wheel in {site}"
            assert not Path(file).is_relative_to(ROOT), file
        page = client.get("/chat/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        parser = References()
        parser.feed(page.text)
        assert "_switchboard/socket.io.min.js" in parser.urls, parser.urls
        page_url = f"{serve.url}/chat/"
        for reference in parser.urls:
            response = check_asset(client, urljoin(page_url, reference))
            if reference.endswith("/socket.io.min.js"):
                assert response.content == pinned_client("socket.io.min.js")
                source_map = re.search(rb"//# sourceMappingURL=(\S+)\s*$", response.content)
                assert source_map is not None
                check_asset(client, urljoin(urljoin(page_url, reference), source_map[1].decode()))
    events = asyncio.run(chat_round_trip(serve.url))
    assert events[0][0] == "session", events  # type: ignore[index]
    text = asyncio.run(page_text(page_url, '#status[data-state="connected"]'))
    assert "did not load" not in text
    assert not [line for line in serve.lines if MISSING_LOG in line], serve.lines


def test_a_wheel_without_the_client_says_so(venv: Path, app_dir: Path) -> None:
    """Remove the client from the installed package (a broken build): one log line, a 503, a notice."""
    site = venv.parent.parent
    vendored = [p for p in site.rglob("web/static/vendor/socket.io.min.js*") if p.is_file()]
    assert vendored, f"no vendored client below {site}"
    saved = {p: p.read_bytes() for p in vendored}
    for p in vendored:
        p.unlink()
    server = Server(venv, app_dir)
    try:
        logged = [line for line in server.lines if MISSING_LOG in line]
        assert len(logged) == 1, server.lines
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/chat/").status_code == 200
            script = client.get("/chat/_switchboard/socket.io.min.js")
            assert script.status_code == 503 and "missing" in script.text, script.text
        text = asyncio.run(page_text(f"{server.url}/chat/", '[data-key="no-client"]'))
        assert "The Socket.IO client (socket.io.min.js) did not load" in text, text
    finally:
        server.stop()
        for p, data in saved.items():
            p.write_bytes(data)
