"""Real parts for the chat page tests: Debian's chromium, driven by Playwright, and a reverse proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

#: Debian's chromium (`apt-get install chromium`; `make test` installs it). Playwright downloads nothing.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Screenshots of the page after each browser test; not committed.
SCREENSHOTS = Path(tempfile.gettempdir()) / "switchboard-screenshots"


def require_browser() -> Any:
    """The `async_playwright` factory, or a failed test saying how to install what is missing."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail(
            "Playwright for Python is missing: run `make test` (installs the dev dependencies) "
            "or `.venv/bin/pip install -e '.[dev]'`",
            pytrace=False,
        )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Debian's chromium is missing at {CHROMIUM}: run `make test` (installs it) "
            "or `apt-get install chromium`",
            pytrace=False,
        )
    return async_playwright


class ReverseProxy:
    """A plain HTTP/1.1 reverse proxy on 127.0.0.1 in a thread of its own (so blocking test code
    never stalls it). Each client connection goes to the next upstream that accepts it, round robin:
    no stickiness, as with a plain load balancer. Websocket upgrades are piped through.

    With `prefix` (e.g. "/prefix"), the app is published below that prefix: the prefix is removed from
    each request path before forwarding, like a proxy that mounts the app there (the app then needs
    `root_path` = prefix).
    """

    def __init__(self, upstreams: list[int], prefix: str = "") -> None:
        self.upstreams = list(upstreams)
        self.prefix = prefix.encode()
        self.port = 0
        #: The upstream port of every Socket.IO websocket, in connection order.
        self.socket_upstreams: list[int] = []
        self._next = 0
        self._refusing = False
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="reverse-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix.decode()}"

    def start(self) -> ReverseProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def cut(self) -> None:
        """Drop every open connection and refuse new ones, as if the network were down."""
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._cut(), self._loop))

    def restore(self) -> None:
        self._refusing = False

    async def _cut(self) -> None:
        self._refusing = True
        for writer in list(self._open):
            writer.transport.abort()

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._cut()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._proxy(reader, writer)
        finally:
            self._handlers.discard(handler)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        upstream = await self._connect()
        if upstream is None:
            writer.transport.abort()
            return
        port, up_reader, up_writer = upstream
        self._open.update((writer, up_writer))
        tasks = [
            asyncio.create_task(self._requests(reader, up_writer, port)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (writer, up_writer):
                self._open.discard(w)
                w.transport.abort()

    async def _connect(self) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in self.upstreams:
            port = self.upstreams[self._next % len(self.upstreams)]
            self._next += 1
            with contextlib.suppress(OSError):
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                return port, up_reader, up_writer
        return None

    async def _requests(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, port: int) -> None:
        """Forward request heads (rewriting the path) and bodies; after an upgrade, raw bytes."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            line, _, fields = head.partition(b"\r\n")
            method, target, version = line.split(b" ", 2)
            rest = target[len(self.prefix) :]
            if self.prefix and target.startswith(self.prefix) and rest[:1] in (b"", b"/", b"?"):
                target = rest if rest.startswith(b"/") else b"/" + rest
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (f.partition(b":") for f in fields.split(b"\r\n") if f)
            }
            up.write(b" ".join((method, target, version)) + b"\r\n" + fields)
            length = int(headers.get(b"content-length", b"0"))
            if length:
                up.write(await reader.readexactly(length))
            await up.drain()
            if headers.get(b"upgrade", b"").lower() == b"websocket":
                if b"/ws/socket.io" in target:
                    self.socket_upstreams.append(port)
                await self._pipe(reader, up)
                return

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
