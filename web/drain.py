"""Graceful drain: what a replica does on SIGTERM before uvicorn closes its sockets.

1. Readiness answers 503 `draining` at once and new handshakes are refused (`connect_error` with
   `{"reason": "draining"}`), so the load balancer sends new connections elsewhere.
2. Every connected client gets `draining` `{"reconnectAfterMs", "drainSeconds"}`: a delay drawn at random
   over the first 80% of the drain window (`SWITCHBOARD_DRAIN_SECONDS`), after which it should close the
   socket and connect again (it lands on another replica and resumes its session).
3. The sockets are closed by the server in batches across that window, each batch at the end of its
   slice, so a client that ignores the hint is moved at about the same time. A closed socket's session is
   marked disconnected in the registry at once, so it resumes elsewhere without waiting.
4. Chat hooks still running get until 95% of the window to finish, then are cancelled.
5. The drain hands over to uvicorn's own SIGTERM handling, which exits the process (with the re-raised
   SIGTERM status); the whole drain lasts at most `SWITCHBOARD_DRAIN_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from web.health import Health
from web.local import LocalSession
from web.protocol import DRAINING
from web.server import ChatServer

log = logging.getLogger("switchboard.web")

#: Share of the window over which clients are moved; the rest is for hooks and the handover.
SPREAD = 0.8
#: Share of the window after which running hooks are cancelled.
HOOKS_DEADLINE = 0.95
#: At most this many batches of disconnects (fewer with fewer sockets).
BATCHES = 10


@dataclass(frozen=True, slots=True)
class DrainReport:
    sockets: int
    batches: int
    hooks_finished: int
    hooks_cancelled: int
    seconds: float


class Drain:
    def __init__(self, server: ChatServer, health: Health, seconds: float) -> None:
        self.server = server
        self.health = health
        self.seconds = seconds
        self.started: float | None = None

    async def run(self) -> DrainReport:
        """Drain this replica (see the module doc); returns what it did."""
        self.started = start = time.monotonic()
        self.health.drain()
        self.server.draining = True
        held = list(self.server.sessions.by_sid.values())
        window = self.seconds * SPREAD
        rng = random.SystemRandom()
        plan = sorted(((rng.uniform(0, window), local) for local in held), key=lambda p: p[0])
        log.warning("draining: %d sockets over %.1fs; new connections are refused", len(plan), self.seconds)
        await asyncio.gather(*(self._hint(local, delay) for delay, local in plan))
        batches = min(len(plan), BATCHES)
        for k in range(batches):
            end = window * (k + 1) / batches
            batch = [local for delay, local in plan if delay < end or k == batches - 1]
            plan = plan[len(batch) :]
            await asyncio.sleep(max(0.0, start + end - time.monotonic()))
            await asyncio.gather(*(self._close(local) for local in batch))
        finished, cancelled = await self._hooks(start + self.seconds * HOOKS_DEADLINE)
        report = DrainReport(len(held), batches, finished, cancelled, time.monotonic() - start)
        log.warning(
            "drained %d sockets in %d batches in %.2fs; hooks: %d finished, %d cancelled",
            report.sockets,
            report.batches,
            report.seconds,
            report.hooks_finished,
            report.hooks_cancelled,
        )
        return report

    async def _hint(self, local: LocalSession, delay: float) -> None:
        payload = {"reconnectAfterMs": int(delay * 1000), "drainSeconds": self.seconds}
        await self.server.sio.emit(DRAINING, payload, to=local.sid)

    async def _close(self, local: LocalSession) -> None:
        if self.server.sessions.by_sid.get(local.sid) is local:  # not gone by itself meanwhile
            await self.server.sio.disconnect(local.sid)

    async def _hooks(self, deadline: float) -> tuple[int, int]:
        running = set(self.server.hook_tasks)
        if not running:
            return 0, 0
        done, pending = await asyncio.wait(running, timeout=max(0.0, deadline - time.monotonic()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return len(done), len(pending)
