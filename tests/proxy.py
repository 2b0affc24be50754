"""A loopback TCP proxy in front of redis-server that can make a replica's subscriber deaf or cut it off.

`deafen()` stops forwarding what Redis sends to subscriber connections (those that sent SUBSCRIBE):
they stay connected, Redis counts them as subscribers, but they hear nothing (bytes wait in the proxy
and TCP buffers until `hear()`). `cut()` closes every connection and refuses new ones until `restore()`.
It runs its own event loop on a thread, so blocking test code does not stall it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from tests.harness import free_port


class RedisProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._hearing: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, daemon=True, name="redis-proxy")
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._hearing = asyncio.Event()
        self._hearing.set()
        self._loop.run_until_complete(self._listen())
        self._ready.set()
        self._loop.run_forever()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return
        self._writers.update((client_w, server_w))
        state = {"subscriber": False}
        await asyncio.gather(
            self._pump(client_r, server_w, state, upstream=True),
            self._pump(server_r, client_w, state, upstream=False),
            return_exceptions=True,
        )
        for writer in (client_w, server_w):
            self._writers.discard(writer)
            writer.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        state: dict[str, Any],
        upstream: bool,
    ) -> None:
        assert self._hearing is not None
        try:
            while data := await reader.read(65536):
                if upstream and b"subscribe" in data.lower():
                    state["subscriber"] = True
                if not upstream and state["subscriber"]:
                    await self._hearing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def _call(self, fn: Any) -> None:
        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def deafen(self) -> None:
        assert self._hearing is not None
        self._call(self._hearing.clear)

    def hear(self) -> None:
        assert self._hearing is not None
        self._call(self._hearing.set)

    def cut(self) -> None:
        """Close every proxied connection and refuse new ones."""

        async def run() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def restore(self) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cut()

        async def finish() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(finish(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
