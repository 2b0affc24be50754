"""Real parts for tests: redis-server and uvicorn replicas as subprocesses, Socket.IO clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import socketio

from bus import offset_key

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
STARTUP_TIMEOUT = 30.0


#: Every subprocess of this run, and the secrets the run used (keys from the environments it gave
#: them, the tokens its clients presented, the resume tokens they were given): when the run ends,
#: tests/conftest.py searches every process's output for any of them, and for anything shaped like
#: a JWT. A secret in a log fails the run.
STARTED: list[Process] = []
SECRETS: set[str] = set()
_SECRET_VARIABLES = re.compile(r"SWITCHBOARD_.*(SECRET|PASSWORD|TOKEN)")


def remember_secrets(env: dict[str, str]) -> None:
    for name, value in env.items():
        if _SECRET_VARIABLES.fullmatch(name):
            SECRETS.update(part for part in re.split(r"[\s,]+", value) if len(part) >= 16)


#: A JWT (header.payload.signature, base64url), wherever it appears; and the words a secret can be.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_WORD = re.compile(r"[A-Za-z0-9_+/-]{16,}=*")


def leaks(processes: list[Process]) -> list[str]:
    """The processes whose output holds one of the run's SECRETS or any JWT (but those meant to print
    one), each with what was found."""
    found = set()
    for process in processes:
        if process.prints_secrets:
            continue
        output = process.output()
        words = {word for match in _WORD.findall(output) for word in (match, match.rstrip("="))}
        if words & SECRETS:
            found.add(f"{process.name}: a secret or token of this run")
        if _JWT.search(output):
            found.add(f"{process.name}: a JWT")
    return sorted(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A subprocess whose combined output is collected; `wait_for_line` blocks on an output line."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        name: str = "",
        stdin: bool = False,
        cwd: Path = ROOT,
        prints_secrets: bool = False,
    ) -> None:
        self.name = name or Path(args[0]).name
        self.lines: list[str] = []
        #: Its output is meant to hold a secret (a token-minting command): not searched for leaks.
        self.prints_secrets = prints_secrets
        STARTED.append(self)
        remember_secrets(env or {})
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, marker: str, timeout: float = STARTUP_TIMEOUT) -> None:
        self.wait_for_count(marker, 1, timeout)

    def wait_for_count(self, marker: str, count: int, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(marker in line for line in self.lines) < count:
                remaining = deadline - time.monotonic()
                if self.proc.poll() is not None or remaining <= 0:
                    raise RuntimeError(
                        f"{self.name} did not print {marker!r} (exit code {self.proc.poll()}):\n"
                        + "\n".join(self.lines[-40:])
                    )
                self._changed.wait(remaining)

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def last_json(self) -> Any:
        return json.loads(next(line for line in reversed(self.lines) if line.startswith("{")))

    async def finished(self, timeout: float = 60) -> None:
        code = await asyncio.to_thread(self.proc.wait, timeout)
        assert code == 0, f"{self.name} exited with {code}:\n{self.output()}"

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_redis(port: int | None = None, *extra: str) -> tuple[Process, int]:
    """A redis-server of its own, keeping nothing on disk (on `port`, or a free one)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed; the tests start their own. "
            "Install it with `apt-get install redis-server` (or run `make test`, which does)."
        )
    port = port or free_port()
    proc = Process(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra],
        name="redis-server",
    )
    proc.wait_for_line("Ready to accept connections")
    return proc, port


@dataclass
class Replica:
    process: Process
    port: int
    path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def socketio_path(self) -> str:
        return f"{self.path}/ws/socket.io"

    def get(self, route: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + route, timeout=10, **kwargs)

    async def aget(self, route: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            return await client.get(route, **kwargs)


def start_replica(
    env: dict[str, str],
    *,
    app: str = "tests.apps.app:app",
    path: str = "/chat",
    workers: int = 1,
    name: str = "replica",
    cwd: Path = ROOT,
) -> Replica:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        args += ["--workers", str(workers)]
    proc = Process(args, env={"CHAT_PATH": path, **env}, name=name, cwd=cwd)
    # With one process uvicorn listens after startup; with workers, each worker starts up after.
    proc.wait_for_line("Uvicorn running on")
    proc.wait_for_count("Application startup complete", workers)
    return Replica(proc, port, path)


@dataclass
class ChatClient:
    """A real python-socketio client that records every event it receives, in order."""

    sio: socketio.AsyncClient = field(default_factory=lambda: socketio.AsyncClient(reconnection=False))
    events: list[tuple[str, Any]] = field(default_factory=list)
    session_id: str = ""
    resume_token: str = ""
    #: Highest log offset received, and the epoch it counts in: what a reconnect presents.
    last_offset: str = "0-0"
    epoch: str = ""
    _consumed: set[int] = field(default_factory=set)
    _answers: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        @self.sio.on("*")
        async def record(event: str, data: Any = None) -> None:
            await self._record(event, data)

        @self.sio.event
        async def disconnect(reason: Any = None) -> None:
            await self._record("disconnect", reason)

        @self.sio.event
        async def connect_error(data: Any = None) -> None:
            await self._record("connect_error", data)

        @self.sio.on("ask")
        async def ask(data: Any) -> Any:
            # The acknowledgement is the answer: it goes out when the test calls answer().
            await self._record("ask", data)
            return {"output": await self._answers.get()}

    async def _record(self, event: str, data: Any) -> None:
        async with self._changed:
            self.events.append((event, data))
            if event == "session":
                self.session_id, self.resume_token = data["sessionId"], data["resumeToken"]
                SECRETS.add(self.resume_token)
            if event == "log_reset":
                self.last_offset, self.epoch = "0-0", data["epoch"]
            offset = data.get("offset") if isinstance(data, dict) else None
            if offset is not None and offset_key(offset) > offset_key(self.last_offset):
                self.last_offset, self.epoch = offset, data.get("epoch", self.epoch)
            self._changed.notify_all()

    async def connect(
        self, replica: Replica, auth: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> ChatClient:
        for value in [(auth or {}).get("token"), (headers or {}).get("Authorization")]:
            if isinstance(value, str) and len(value) >= 16:
                SECRETS.add(value.removeprefix("Bearer "))
        await self.sio.connect(
            replica.url,
            socketio_path=replica.socketio_path,
            transports=["websocket"],
            auth=auth or {},
            headers=headers or {},
            wait_timeout=10,
        )
        await self.next("session")
        return self

    async def refused(self, replica: Replica, auth: dict[str, Any] | None = None) -> Any:
        """Connect expecting a refusal; returns the refusal's data."""
        with contextlib.suppress(socketio.exceptions.ConnectionError):
            await self.connect(replica, auth)
        return await self.next("connect_error")

    async def start(self, replica: Replica, auth: dict[str, Any] | None = None) -> ChatClient:
        """Connect, then announce the client like the chat page does (runs on_chat_start once)."""
        await self.connect(replica, auth)
        await self.sio.emit("connection_successful")
        return self

    async def next(
        self, event: str, where: Callable[[Any], bool] = lambda _: True, timeout: float = 10.0
    ) -> Any:
        """The first not-yet-consumed `event` matching `where`; later events stay for later calls."""

        def find() -> int | None:
            for index, (name, data) in enumerate(self.events):
                if index not in self._consumed and name == event and where(data):
                    return index
            return None

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: find() is not None), timeout)
            except TimeoutError:
                raise AssertionError(f"no {event!r} event within {timeout}s; got {self.events}") from None
            index = find()
            assert index is not None
            self._consumed.add(index)
            return self.events[index][1]

    def resume_auth(self, **extra: Any) -> dict[str, Any]:
        """The handshake `auth` that resumes this client's session where it left off."""
        return {
            "sessionId": self.session_id,
            "resumeToken": self.resume_token,
            "lastOffset": self.last_offset,
            **({"lastEpoch": self.epoch} if self.epoch else {}),
            **extra,
        }

    def answer(self, text: str) -> None:
        """Answer the question the client is holding (or the next one it gets)."""
        self._answers.put_nowait(text)

    async def ack(self) -> None:
        assert await self.sio.call("ack", {"offset": self.last_offset}, timeout=10) is True

    def outputs(self) -> list[str]:
        return [m["output"] for m in self.received("new_message")]

    def received(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def say(self, text: str) -> Any:
        """Send a user message and return the final (non-streaming) reply of the echo handler."""
        message = {"id": f"m-{len(self.events)}", "output": text, "type": "user_message"}
        await self.sio.emit("client_message", {"message": message})
        return await self.next("update_message", lambda m: text in m["output"])

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
