"""Liveness and readiness of one replica, answered as JSON at `{path}/healthz` and `{path}/readyz`.

Liveness: the event loop answers. Readiness: the replica has started, is not draining, its bus
subscription is live, and a probe envelope it publishes to its own replica channel comes back through
the bus within `SWITCHBOARD_READY_TIMEOUT_SECONDS`. A listener that is connected but deaf (it hears
nothing Redis publishes) therefore fails readiness, as does one cut off from Redis.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from bus import BusUnavailable, Envelope, Target
from web.protocol import CONTROL_PREFIX
from web.server import ChatServer

PROBE = CONTROL_PREFIX + "probe"
#: How long a live subscription may take to show (a reconnect in progress counts as not live).
_SUBSCRIPTION_CHECK = 0.05

State = Literal["starting", "running", "draining", "stopped"]


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    #: Why not: `starting`, `draining`, `stopped`, `bus_unavailable`, `subscription_lost`, `probe_timeout`.
    reason: str | None = None
    #: The probe's round trip through the bus, when it came back.
    probe_ms: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def body(self, replica: str) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ready" if self.ready else "unready", "replica": replica}
        if self.reason is not None:
            body["reason"] = self.reason
        if self.probe_ms is not None:
            body["probeMs"] = round(self.probe_ms, 2)
        return body | self.detail


class Health:
    """The readiness state machine of one chat server, and its bus probe."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server
        self.state: State = "starting"
        self._probes: dict[str, asyncio.Future[None]] = {}
        self._checking: asyncio.Task[Readiness] | None = None
        #: Called with every readiness answer (metrics).
        self.observers: list[Any] = []

    @property
    def replica(self) -> str:
        return self.server.settings.replica_id

    async def start(self) -> None:
        """Once the chat server runs: listen for probes on this replica's own channel."""
        await self.server.bus.subscribe(Target("replica", self.replica), self._on_probe)
        self.state = "running"

    def drain(self) -> None:
        self.state = "draining"

    def stop(self) -> None:
        self.state = "stopped"
        for waiter in self._probes.values():
            waiter.cancel()

    def _state(self) -> State:
        return self.state

    async def readiness(self) -> Readiness:
        """Whether this replica should get new connections now; concurrent calls share one probe."""
        if self.state != "running":
            result = Readiness(False, self.state)
        else:
            if self._checking is None or self._checking.done():
                self._checking = asyncio.create_task(self._check())
            result = await asyncio.shield(self._checking)
            if self._state() != "running":  # began draining while the probe ran
                result = Readiness(False, self._state())
        for observe in self.observers:
            observe(result)
        return result

    async def _check(self) -> Readiness:
        bus = self.server.bus
        try:
            await asyncio.wait_for(bus.wait_ready(), _SUBSCRIPTION_CHECK)
        except TimeoutError:
            return Readiness(False, "subscription_lost", detail={"reconnects": bus.reconnects})
        probe = Envelope(Target("replica", self.replica), PROBE, {}, self.replica)
        came_back = asyncio.get_running_loop().create_future()
        self._probes[probe.id] = came_back
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.server.settings.ready_timeout_seconds):
                try:
                    await bus.publish(probe)
                except BusUnavailable as exc:
                    return Readiness(False, "bus_unavailable", detail={"error": str(exc)})
                await came_back
        except TimeoutError:
            # Published (or stuck publishing) but never heard back: Redis is unreachable, or the
            # subscription is connected but deaf.
            return Readiness(False, "probe_timeout", detail={"timeoutSeconds": self._timeout})
        finally:
            self._probes.pop(probe.id, None)
        return Readiness(True, probe_ms=(time.perf_counter() - started) * 1000)

    @property
    def _timeout(self) -> float:
        return self.server.settings.ready_timeout_seconds

    async def _on_probe(self, envelope: Envelope, offset: str, epoch: str) -> None:
        if envelope.event == PROBE and (waiter := self._probes.get(envelope.id)) is not None:
            if not waiter.done():
                waiter.set_result(None)
