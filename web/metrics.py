"""Prometheus metrics of one replica, served by mount_app at `{path}/metrics` (`SWITCHBOARD_METRICS_PATH`).

Under `uvicorn --workers N` set `PROMETHEUS_MULTIPROC_DIR` to an empty directory, the same for every
worker, before they start: each worker writes its values there and whichever worker answers a scrape
reports the sum of all (prometheus-client's multiprocess mode). Counters and histograms add up across
workers; the session and socket gauges are summed over live workers; `switchboard_ready` has one
series per worker (`pid` label). A worker marks itself dead at shutdown. Empty the directory when the
whole server (re)starts.

The names, all prefixed `switchboard_`, are listed in the README ("Operating").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from typing import Any, cast

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bus import Envelope
from bus.core import BusObserver
from web.health import Health, Readiness
from web.protocol import CONTROL_PREFIX, EVENTS
from web.server import ChatServer

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: How often the gauges (sessions, sockets) and the reconnect counter are brought up to date.
SAMPLE_SECONDS = 1.0
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LAG = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

SESSIONS = Gauge(
    "switchboard_sessions_held", "Sessions whose socket this replica holds.", multiprocess_mode="livesum"
)
SOCKETS = Gauge("switchboard_sockets", "Open Socket.IO connections.", multiprocess_mode="livesum")
SENDS = Counter(
    "switchboard_deliveries",
    "Sends made by this replica, by event class and receipt outcome (delivered, queued, dropped).",
    ["event_class", "outcome"],
)
EMITS = Counter(
    "switchboard_socket_emits",
    "Envelopes handled by the mailboxes of held sessions: emitted to the socket, or duplicate (dropped).",
    ["event_class", "outcome"],
)
LAG = Histogram(
    "switchboard_delivery_lag_seconds",
    "From an envelope's creation (any process) to its emit on a socket here.",
    buckets=_LAG,
)
REPLAYS = Counter("switchboard_replays", "Resume replays run.")
REPLAYED = Counter("switchboard_replayed_messages", "Messages emitted by resume replays.")
TRUNCATIONS = Counter("switchboard_replay_truncations", "Resumes whose start was trimmed from the log.")
RECONNECTS = Counter("switchboard_bus_reconnects", "Times the bus subscription was lost and re-established.")
READY = Gauge(
    "switchboard_ready", "1 while readiness answers 200, else 0 (last answer).", multiprocess_mode="liveall"
)
DRAINING = Gauge("switchboard_draining", "1 while this replica drains.", multiprocess_mode="livemax")
WEBHOOKS = Counter("switchboard_webhook_requests", "Webhook requests by HTTP status.", ["status"])
ASKS = Counter(
    "switchboard_asks", "Questions asked from this process by outcome (answered, timeout).", ["outcome"]
)
REDIS = Histogram(
    "switchboard_redis_command_seconds",
    "Redis round trips of the bus: send (the send script), publish, read_log.",
    ["command"],
    buckets=_LATENCY,
)


def event_class(event: str) -> str:
    """A bounded label for an event name: message, stream, task, ask, control, protocol or custom."""
    if event in ("new_message", "update_message", "delete_message"):
        return "message"
    if event in ("stream_start", "stream_token"):
        return "stream"
    if event in ("task_start", "task_end"):
        return "task"
    if event in ("ask", "ask_timeout", "clear_ask"):
        return "ask"
    if event.startswith(CONTROL_PREFIX):
        return "control"
    return "protocol" if event in EVENTS else "custom"


@functools.lru_cache(maxsize=512)
def _child(metric: Counter | Histogram, *labels: str) -> Any:
    """One labelled series, looked up once (prometheus-client's labels() takes a lock and builds a
    tuple each time); bounded, as custom event names are many."""
    return metric.labels(*labels)


class Observer(BusObserver):
    """Counts what the bus of a chat server reports (on the delivery path: kept cheap)."""

    def command(self, name: str, seconds: float) -> None:
        _child(REDIS, name).observe(seconds)

    def sent(self, event: str, status: str) -> None:
        _child(SENDS, event_class(event), status).inc()

    def delivered(self, envelope: Envelope, outcome: str) -> None:
        _child(EMITS, event_class(envelope.event), outcome).inc()
        if outcome == "emitted":
            LAG.observe(max(0.0, time.time() - envelope.created_at))

    def replayed(self, count: int, truncated: bool) -> None:
        REPLAYS.inc()
        REPLAYED.inc(count)
        if truncated:
            TRUNCATIONS.inc()

    def asked(self, outcome: str) -> None:
        ASKS.labels(outcome).inc()


class Metrics:
    def __init__(self, server: ChatServer, health: Health) -> None:
        self.server = server
        self.health = health
        server.bus.observer = Observer()
        health.observers.append(self._readiness)
        self._reconnects = 0
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reconnects = self.server.bus.reconnects
        self._sampler = asyncio.create_task(self._sample_forever(), name="switchboard-metrics")

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        if os.environ.get(MULTIPROCESS_DIR):
            with contextlib.suppress(Exception):
                cast(Any, multiprocess).mark_process_dead(os.getpid())  # untyped in some releases

    def _readiness(self, result: Readiness) -> None:
        READY.set(1 if result.ready else 0)

    def sample(self) -> None:
        """Bring the gauges and the reconnect counter up to date."""
        SESSIONS.set(len(self.server.sessions.by_id))
        SOCKETS.set(len(self.server.sio.eio.sockets))
        reconnects = self.server.bus.reconnects
        if reconnects > self._reconnects:
            RECONNECTS.inc(reconnects - self._reconnects)
        self._reconnects = reconnects
        draining = self.health.state == "draining"
        DRAINING.set(1 if draining else 0)
        if draining:
            READY.set(0)

    async def _sample_forever(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    async def endpoint(self, request: Request) -> Response:
        self.sample()
        return Response(scrape(), media_type=CONTENT_TYPE_LATEST)


def scrape() -> bytes:
    """The exposition text: this process's registry, or every worker's in multiprocess mode."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        cast(Any, multiprocess).MultiProcessCollector(registry)  # untyped in some releases
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class _WebhookCounter:
    """Counts the responses of the webhook endpoints (web/webhooks.py) by status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            endpoint: Any = scope.get("endpoint")
            if getattr(endpoint, "__module__", None) == "web.webhooks":
                WEBHOOKS.labels(str(status)).inc()


def count_webhooks(app: FastAPI) -> None:
    app.add_middleware(_WebhookCounter)
