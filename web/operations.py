"""What operators need from a replica, put on the app by mount_app: liveness, readiness and metrics
endpoints, JSON logs, and the graceful drain on SIGTERM (see web/health.py, web/drain.py,
web/metrics.py, web/logs.py and the README's "Operating" section)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from web.drain import Drain
from web.health import Health
from web.server import ChatServer

log = logging.getLogger("switchboard.web")

SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class Operations:
    """The health, readiness, metrics and drain of one mounted chat server; an async context manager
    run by mount_app's lifespan, inside the chat server's."""

    def __init__(self, app: FastAPI, server: ChatServer, path: str) -> None:
        settings = server.settings
        self.server = server
        self.health = Health(server)
        self.drain = Drain(server, self.health, settings.drain_seconds)
        self.health_path = settings.health_path or f"{path}/healthz"
        self.ready_path = settings.ready_path or f"{path}/readyz"
        self.metrics_path = settings.metrics_path or f"{path}/metrics"
        self.metrics: Any = None
        if settings.log_format == "json":
            from web import logs

            logs.use_json(settings)
        app.add_route(self.health_path, self._liveness, methods=["GET"], include_in_schema=False)
        app.add_route(self.ready_path, self._readiness, methods=["GET"], include_in_schema=False)
        if self.metrics_path != "off":
            from web import metrics  # prometheus-client loads only when metrics are served

            self.metrics = metrics.Metrics(server, self.health)
            metrics.count_webhooks(app)
            app.add_route(self.metrics_path, self.metrics.endpoint, methods=["GET"], include_in_schema=False)
        self._draining: asyncio.Task[Any] | None = None
        self._replaced: SignalHandler = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Operations:
        self._loop = asyncio.get_running_loop()
        await self.health.start()
        if self.metrics is not None:
            await self.metrics.start()
        self._take_sigterm()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._give_back_sigterm()
        self.health.stop()
        if self._draining is not None and not self._draining.done():
            self._draining.cancel()
            await asyncio.gather(self._draining, return_exceptions=True)
        if self.metrics is not None:
            await self.metrics.stop()

    # -- endpoints -------------------------------------------------------------------------------

    async def _liveness(self, request: Request) -> Response:
        """The event loop answers: that is all liveness asks."""
        return JSONResponse({"status": "alive", "replica": self.server.settings.replica_id})

    async def _readiness(self, request: Request) -> Response:
        result = await self.health.readiness()
        body = result.body(self.server.settings.replica_id)
        body["sessions"] = len(self.server.sessions.by_id)
        return JSONResponse(body, status_code=200 if result.ready else 503)

    # -- SIGTERM ---------------------------------------------------------------------------------

    def _take_sigterm(self) -> None:
        """Put the drain in front of the SIGTERM handler in place (uvicorn's, installed before the
        app starts): the drain runs first, then that handler, which shuts the server down."""
        if threading.current_thread() is not threading.main_thread():
            log.info("not on the main thread: SIGTERM will not drain (no signal handlers here)")
            return
        self._replaced = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _give_back_sigterm(self) -> None:
        if self._replaced is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._replaced)
        self._replaced = None

    def _on_sigterm(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is not None or self._loop is None:
            self._hand_over(sig, frame)  # a second SIGTERM: stop now
            return
        self._loop.call_soon_threadsafe(self._start_drain, sig)

    def _start_drain(self, sig: int) -> None:
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain_then_exit(sig), name="switchboard-drain")

    async def drain_now(self) -> None:
        """Drain without a signal (tests, embedding servers); the process keeps running."""
        await self.drain.run()

    async def _drain_then_exit(self, sig: int) -> None:
        try:
            await self.drain.run()
        except Exception:
            log.exception("the drain failed; shutting down now")
        finally:
            self._hand_over(sig, None)

    def _hand_over(self, sig: int, frame: FrameType | None) -> None:
        handler = self._replaced
        self._give_back_sigterm()
        if callable(handler):
            handler(sig, frame)
        else:  # no server-installed handler (SIG_DFL): end the process the default way
            with contextlib.suppress(Exception):
                signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)
