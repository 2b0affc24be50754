"""The bus: envelopes published to per-target channels, with the backend chosen by URL scheme."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from bus.backend import Restored, Store, Transport, open_backend
from bus.coalesce import Coalescer, Merge
from bus.envelope import Envelope, EnvelopeError, Target, offset_key, unframe
from bus.errors import SessionNotFound
from bus.keys import Keys
from bus.registry import SessionRegistry
from bus.settings import Settings, get_settings
from bus.trace import working_on

log = logging.getLogger("switchboard.bus")

#: Receives each envelope for a subscribed target with its log offset and the log's epoch
#: ("", "" when not logged).
Handler = Callable[[Envelope, str, str], Awaitable[None]]


@dataclass(slots=True)
class BusStats:
    """Counters of one process's bus; tests and operators read them."""

    published: int = 0
    received: int = 0
    malformed: int = 0
    unhandled: int = 0
    failed: int = 0


class BusObserver:
    """What a bus reports while it works (metrics); this default ignores everything.

    `web/metrics.py` sets a counting one on a chat server's bus. Every method must be cheap and
    must not raise.
    """

    def command(self, name: str, seconds: float) -> None:
        """A Redis round trip (`send`, `publish`, `read_log`) took `seconds`."""

    def sent(self, event: str, status: str) -> None:
        """A send's receipt: `delivered`, `queued` or `dropped`."""

    def delivered(self, envelope: Envelope, outcome: str) -> None:
        """A mailbox handled an envelope for its socket: `emitted` or `duplicate`."""

    def replayed(self, count: int, truncated: bool) -> None:
        """A resume's replay emitted `count` messages; `truncated`: part of it was trimmed away."""

    def asked(self, outcome: str) -> None:
        """A question asked from this process ended: `answered`, `timeout` or `failed`."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a send did: the message id, where it went, its log offset, how many replicas got it live."""

    id: str
    target: Target
    offset: str
    delivered: int
    #: The epoch of the session log `offset` counts in ("" when not logged).
    epoch: str = ""

    @property
    def status(self) -> Literal["delivered", "queued", "dropped"]:
        """`queued`: no socket has it yet, the session log keeps it for the resume; `dropped`:
        nobody had it live and it was not logged (ephemeral events, user and broadcast sends)."""
        if self.delivered:
            return "delivered"
        return "queued" if self.offset else "dropped"


@dataclass(frozen=True, slots=True)
class LogBatch:
    """One bounded read of a session log."""

    #: The decodable entries, oldest first (undecodable ones are skipped and counted).
    entries: list[tuple[str, Envelope]]
    #: Offset of the last entry read, decodable or not ("" if none).
    last: str
    #: The batch was full: there may be more after `last`.
    more: bool


class Bus:
    """One process's connection to the bus: `async with Bus() as bus: await bus.send(...)`."""

    def __init__(self, settings: Settings | None = None, *, on_restored: Restored | None = None) -> None:
        self.settings = settings or get_settings()
        self.keys = Keys(self.settings.key_prefix)
        backend = open_backend(
            self.settings.bus_url,
            self.keys.replica(self.settings.replica_id),
            timeout=self.settings.redis_timeout_seconds,
            max_connections=self.settings.redis_max_connections,
        )
        #: Pub/sub and the session logs.
        self.transport: Transport = backend
        #: Expiring hashes, lists, counters and claims (the registry, asks, threads, webhooks).
        self.store: Store = backend
        self.registry = SessionRegistry(self.store, self.keys, self.settings)
        self.stats = BusStats()
        self.observer = BusObserver()
        self._handlers: dict[str, Handler] = {}
        self._on_restored = on_restored
        self._streams = Coalescer(self._send_ephemeral, self.settings.stream_coalesce_seconds)

    async def __aenter__(self) -> Bus:
        await self.transport.connect(self._receive, self._restored)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._streams.close()
        await self.transport.disconnect()

    @property
    def reconnects(self) -> int:
        return self.transport.reconnects

    async def wait_ready(self, reconnects: int = 0) -> None:
        """Wait until subscriptions are live, after at least `reconnects` reconnections (readiness)."""
        await self.transport.wait_ready(reconnects)

    def channel(self, target: Target) -> str:
        return self.keys.channel(target)

    def _encode(self, envelope: Envelope) -> bytes:
        data = envelope.encode()
        if len(data) > self.settings.max_envelope_bytes:
            raise EnvelopeError(
                f"envelope of {len(data)} bytes exceeds the limit of "
                f"{self.settings.max_envelope_bytes} (SWITCHBOARD_MAX_ENVELOPE_BYTES)"
            )
        return data

    async def publish(self, envelope: Envelope) -> int:
        """Publish without logging (control and reply messages); returns how many processes got it."""
        data, started = self._encode(envelope), time.perf_counter()
        received = await self.transport.publish(self.channel(envelope.target), data)
        self.observer.command("publish", time.perf_counter() - started)
        self.stats.published += 1
        return received

    async def send(self, envelope: Envelope, *, durable: bool = True) -> Receipt:
        """Send to the envelope's target; returns a receipt. Encoded once, one round trip.

        To a session: appended to its log (if `durable`) and published in one atomic step;
        SessionNotFound if it does not exist. To a user or everyone: published live only (the
        replicas holding matching sockets deliver it; `delivered` counts those replicas).
        """
        if envelope.target.kind != "session":
            receipt = Receipt(envelope.id, envelope.target, "", await self.publish(envelope))
            self.observer.sent(envelope.event, receipt.status)
            return receipt
        session_id = envelope.target.id
        await self._streams.flush(session_id)  # held stream tokens of the session go first
        return await self._send(envelope, durable)

    async def stream(self, envelope: Envelope, merge: Merge) -> Receipt | None:
        """Send an ephemeral envelope to a session (token streams): in the background, joined (by
        `merge`) with the next ones while one is on its way or within SWITCHBOARD_STREAM_COALESCE_SECONDS
        (bus/coalesce.py); then None, no receipt. Without a window: sent at once, with its receipt."""
        if not self.settings.stream_coalesce_seconds or envelope.target.kind != "session":
            return await self.send(envelope, durable=False)
        await self._streams.add(envelope, merge)
        return None

    async def _send_ephemeral(self, envelope: Envelope) -> Receipt:
        return await self._send(envelope, False)

    async def _send(self, envelope: Envelope, durable: bool) -> Receipt:
        session_id = envelope.target.id
        started = time.perf_counter()
        result = await self.transport.send(
            self.keys.session(session_id),
            self.keys.session_log(session_id),
            self.channel(envelope.target),
            self._encode(envelope),
            message_id=envelope.id,
            durable=durable,
            maxlen=self.settings.session_log_length,
            max_bytes=self.settings.session_log_bytes,
            max_age=self.settings.session_log_seconds,
        )
        self.observer.command("send", time.perf_counter() - started)
        if result is None:
            raise SessionNotFound(session_id)
        self.stats.published += 1
        offset, epoch, delivered = result
        receipt = Receipt(envelope.id, envelope.target, offset, delivered, epoch if offset else "")
        self.observer.sent(envelope.event, receipt.status)
        return receipt

    async def read_log(self, session_id: str, after: str) -> LogBatch:
        """The next batch (SWITCHBOARD_REPLAY_BATCH at most) of the session's log after `after`."""
        size, started = self.settings.replay_batch, time.perf_counter()
        raw = await self.transport.read_log(self.keys.session_log(session_id), after, size)
        self.observer.command("read_log", time.perf_counter() - started)
        entries = []
        for offset, data in raw:
            try:
                entries.append((offset, Envelope.decode(data, max_bytes=self.settings.max_envelope_bytes)))
            except EnvelopeError as exc:
                self.stats.malformed += 1
                log.warning("skipped a malformed log entry %s of session %s: %s", offset, session_id, exc)
        return LogBatch(entries, raw[-1][0] if raw else "", len(raw) == size)

    async def log_bounds(self, session_id: str) -> tuple[str, str, str]:
        """(first offset the session's log still holds or "", last offset ever appended or "0-0",
        the log's epoch, "" if the session is gone)."""
        return await self.transport.log_bounds(
            self.keys.session(session_id), self.keys.session_log(session_id)
        )

    async def lost_after(self, session_id: str, after: str) -> tuple[bool, str]:
        """Whether messages after `after` were trimmed from the session's log (a replay would
        be partial), and the first offset the log still holds ("" if none)."""
        first, last, _ = await self.log_bounds(session_id)
        return trimmed_after(after, first, last), first

    async def subscribe(self, target: Target, handler: Handler) -> None:
        """Deliver envelopes for `target` to `handler`; returns once the subscription is live."""
        channel = self.channel(target)
        self._handlers[channel] = handler
        await self.transport.subscribe(channel)

    async def unsubscribe(self, target: Target) -> None:
        channel = self.channel(target)
        self._handlers.pop(channel, None)
        await self.transport.unsubscribe(channel)

    async def _restored(self) -> None:
        if self._on_restored is not None:
            await self._on_restored()

    async def _receive(self, channel: str, raw: bytes) -> None:
        # Never raises: one bad message or failing handler must not stop the listener.
        try:
            offset, epoch, data = unframe(raw)
            envelope = Envelope.decode(data, max_bytes=self.settings.max_envelope_bytes)
            if self.channel(envelope.target) != channel:
                raise EnvelopeError(f"envelope for {envelope.target} arrived on {channel}")
        except EnvelopeError as exc:
            self.stats.malformed += 1
            log.warning("dropped a malformed message on %s: %s", channel, exc)
            return
        self.stats.received += 1
        handler = self._handlers.get(channel)
        if handler is None:
            self.stats.unhandled += 1
            return
        session = envelope.target.id if envelope.target.kind == "session" else None
        try:
            with working_on(session=session, envelope=envelope.id):
                await handler(envelope, offset, epoch)
        except Exception:
            self.stats.failed += 1
            log.exception("handler for %s failed on envelope %s", channel, envelope.id)


def trimmed_after(after: str, first: str, last: str) -> bool:
    """Whether a log holding `first`..`last` lost entries after `after` (offsets are contiguous)."""
    after_n, last_n = offset_key(after)[0], offset_key(last)[0]
    first_n = offset_key(first)[0] if first else last_n + 1
    return after_n < last_n and first_n > after_n + 1
