"""The session registry: which sessions exist, whose they are, and which replica holds each one.

A connected session's record has no time to live: its replica's liveness stands for it. Each replica
beats once per `heartbeat_seconds` in one hash (`Keys.replicas`), whatever the number of its sessions;
a replica silent for three beats is dead, and its sessions count as disconnected since its last beat
(checked on lookup, and by a sweep any live replica runs). A disconnected session's record, log and
open questions expire a grace period after the disconnect.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, TypeGuard

import msgpack

from bus.backend import Store
from bus.keys import Keys
from bus.settings import Settings

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: A replica silent for this many heartbeats is dead.
DEAD_AFTER_BEATS = 3
#: Sessions checked (and registered again) at a time when Redis lost data.
_RESTORE_BATCH = 500


def valid_session_id(value: object) -> TypeGuard[str]:
    """Whether `value` could be a session id this project issued (checked before any lookup)."""
    return isinstance(value, str) and _SESSION_ID.fullmatch(value) is not None


def new_session_id() -> str:
    """144 random bits, URL-safe; never starting with `-`, which a command line would take for an
    option (`switchboard sessions show ID`)."""
    while (session_id := secrets.token_urlsafe(18)).startswith("-"):
        pass
    return session_id


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_epoch() -> str:
    """The name of a new session log: offsets count within one epoch."""
    return secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What any process can learn about a session."""

    id: str
    #: The user the session is bound to, as `User.to_dict()` gives it; None without login.
    user: dict[str, Any] | None
    thread_id: str | None
    replica: str
    #: Held by a live replica (a dead replica's sessions count as disconnected).
    connected: bool
    created_at: float
    last_seen: float
    token_hash: str
    #: The session's custom `user_session` keys, msgpack-encoded by the replica that holds it.
    data: bytes
    #: The highest log offset the client acknowledged ("0-0" if none).
    acked: str
    #: The epoch of the session's log.
    epoch: str

    def accepts(self, resume_token: str) -> bool:
        """Whether `resume_token` is this session's, compared in constant time."""
        return hmac.compare_digest(token_hash(resume_token), self.token_hash)


@dataclass(frozen=True, slots=True)
class Held:
    """What a replica re-registers for a session it holds when Redis lost its record."""

    id: str
    user: dict[str, Any] | None
    thread_id: str | None
    token_hash: str
    data: bytes
    acked: str


class SessionRegistry:
    """Session records as hashes; see the module docstring for their lifetimes."""

    def __init__(self, store: Store, keys: Keys, settings: Settings) -> None:
        self._store = store
        self._keys = keys
        self._ttl = settings.session_grace_seconds
        self._beat_every = settings.heartbeat_seconds
        self._replica = settings.replica_id
        #: What the last beat saw: (the server's identity, whether our beat was there).
        self._server: str | None = None
        #: Other replicas' last beats as read recently (monotonic time read, beat): a lookup of a
        #: session held elsewhere needs no second round trip while the reading is fresh.
        self._beats: dict[str, tuple[float, float | None]] = {}

    @property
    def dead_after(self) -> float:
        return DEAD_AFTER_BEATS * self._beat_every

    async def create(
        self,
        session_id: str,
        *,
        user: dict[str, Any] | None,
        thread_id: str | None,
        resume_token: str,
    ) -> None:
        held = Held(session_id, user, thread_id, token_hash(resume_token), b"", "0-0")
        await self._register(held)

    async def _register(self, held: Held) -> None:
        now = str(time.time()).encode()
        fields = {
            "user": msgpack.packb(held.user) if held.user else b"",
            "thread_id": (held.thread_id or "").encode(),
            "replica": self._replica.encode(),
            "connected": b"1",
            "created_at": now,
            "last_seen": now,
            "token_hash": held.token_hash.encode(),
            "data": held.data,
            "acked": held.acked.encode(),
            "epoch": new_epoch().encode(),
            "seq": b"0",
        }
        # Independent writes, together: on Redis one round trip (bus/multiplex.py).
        await asyncio.gather(
            self._store.hash_set(self._keys.session(held.id), fields, None),
            self._store.set_add(self._keys.replica_sessions(self._replica), held.id),
        )

    async def get(self, session_id: str) -> SessionRecord | None:
        """The session's record, or None if it never existed or has expired."""
        if not valid_session_id(session_id):
            return None
        found = await self._store.hash_get(self._keys.session(session_id))
        if found is None or "token_hash" not in found:
            return None
        text = {k: v.decode(errors="replace") for k, v in found.items() if k not in ("data", "user")}
        user = msgpack.unpackb(found["user"]) if found.get("user") else None
        connected, last_seen = text.get("connected") == "1", float(text.get("last_seen", 0))
        replica = text.get("replica", "")
        if connected and replica != self._replica:
            beat = await self._last_beat(replica)
            if beat is None or time.time() - beat > self.dead_after:  # its replica died
                connected, last_seen = False, max(last_seen, beat or 0.0)
                if time.time() > last_seen + self._ttl:
                    return None
        return SessionRecord(
            id=session_id,
            user=user if isinstance(user, dict) else None,
            thread_id=text.get("thread_id") or None,
            replica=replica,
            connected=connected,
            created_at=float(text.get("created_at", 0)),
            last_seen=last_seen,
            token_hash=text["token_hash"],
            data=found.get("data", b""),
            acked=text.get("acked") or "0-0",
            epoch=text.get("epoch", ""),
        )

    async def resumable(self, session_id: object, resume_token: object) -> SessionRecord | None:
        """The session's record if `resume_token` is its current one, else None."""
        if not (valid_session_id(session_id) and isinstance(resume_token, str) and resume_token):
            return None
        record = await self.get(session_id)
        return record if record is not None and record.accepts(resume_token) else None

    async def attach(self, session_id: str, resume_token: str) -> None:
        """Record that this replica now holds the session's socket, under a fresh resume token."""
        fields = {
            "token_hash": token_hash(resume_token).encode(),
            "replica": self._replica.encode(),
            "connected": b"1",
            "last_seen": str(time.time()).encode(),
        }
        await asyncio.gather(
            self._store.hash_set(self._keys.session(session_id), fields, None),
            self._store.expire(self._companions(session_id), None),
            self._store.set_add(self._keys.replica_sessions(self._replica), session_id),
        )

    async def detach(self, session_id: str, data: bytes, acked: str) -> bool:
        """Record a disconnect, unless another replica holds the session now (then False): the
        session, its log and open questions stay resumable for the grace period."""
        fields = {
            "connected": b"0",
            "last_seen": str(time.time()).encode(),
            "data": data,
            "acked": acked.encode(),
        }
        key = self._keys.session(session_id)
        mine = await self._store.hash_set_if(key, "replica", self._replica.encode(), fields, self._ttl)
        if mine:
            await self._store.expire(self._companions(session_id), self._ttl)
        await self._store.set_remove(self._keys.replica_sessions(self._replica), session_id)
        return mine

    def _companions(self, session_id: str) -> list[str]:
        """The keys that live exactly as long as the session record."""
        return [self._keys.session_log(session_id), self._keys.session_asks(session_id)]

    async def save_state(self, session_id: str, data: bytes, acked: str) -> None:
        """Save what follows the session to another replica: custom keys and the acked offset."""
        fields = {"data": data, "acked": acked.encode()}
        await self._store.hash_set_if(
            self._keys.session(session_id), "replica", self._replica.encode(), fields, None
        )

    async def open_ask(self, session_id: str, correlation: str, ask: dict[str, Any], ttl: float) -> None:
        """Record a question put to the session, so the replica holding it next asks it again."""
        key = self._keys.session_asks(session_id)
        await self._store.hash_set(key, {correlation: msgpack.packb(ask)}, max(ttl, self._ttl))

    async def close_ask(self, session_id: str, correlation: str) -> None:
        await self._store.hash_delete(self._keys.session_asks(session_id), correlation)

    async def open_asks(self, session_id: str) -> list[dict[str, Any]]:
        """The session's open questions (unreadable entries are skipped)."""
        found = await self._store.hash_get(self._keys.session_asks(session_id)) or {}
        asks = []
        for packed in found.values():
            try:
                ask = msgpack.unpackb(packed, raw=False, strict_map_key=True)
            except Exception:  # noqa: S112  # msgpack raises many types; a bad entry is not an ask
                continue
            if isinstance(ask, dict):
                asks.append(ask)
        return asks

    async def delete(self, session_id: str) -> None:
        await self._store.delete(self._keys.session(session_id), *self._companions(session_id))

    # -- liveness --------------------------------------------------------------------------------

    async def beat(self) -> bool:
        """Say this replica is alive; True if Redis lost data since the last beat (restarted empty,
        failed over to another server, or was flushed): the caller re-registers its sessions."""
        key, me = self._keys.replicas(), self._replica
        previous = (await self._store.hash_get(key, [me]) or {}).get(me)
        server = await self._store.server_id()
        await self._store.hash_set(key, {me: str(time.time()).encode()}, None)
        lost = self._server is not None and (previous is None or server != self._server)
        self._server = server
        return lost

    async def restore(self, held: list[Held]) -> list[str]:
        """Register again, with new logs, the held sessions whose records are gone; returns their ids.
        In batches of concurrent commands (on Redis a round trip each): a replica may hold tens of
        thousands, and the bus subscription waits for this."""
        missing: list[str] = []
        for start in range(0, len(held), _RESTORE_BATCH):
            batch = held[start : start + _RESTORE_BATCH]
            found = await asyncio.gather(
                *(self._store.hash_get(self._keys.session(h.id), ["epoch"]) for h in batch)
            )
            lost = [h for h, record in zip(batch, found, strict=True) if record is None]
            await asyncio.gather(*(self._register(h) for h in lost))
            missing += (h.id for h in lost)
        return missing

    async def leave(self) -> None:
        """This replica stops: it beats no more (its sessions were detached)."""
        await self._store.hash_delete(self._keys.replicas(), self._replica)

    async def sweep(self) -> int:
        """Mark the sessions of dead replicas disconnected since their last beat; returns how many."""
        now, swept = time.time(), 0
        for replica, raw in (await self._store.hash_get(self._keys.replicas()) or {}).items():
            beat = _float(raw)
            if replica == self._replica or now - beat <= self.dead_after:
                continue
            if await self._store.claim(self._keys.sweep(replica), b"1", self.dead_after) is not None:
                continue  # another replica sweeps it
            sessions = self._keys.replica_sessions(replica)
            for session_id in await self._store.set_members(sessions):
                ttl = beat + self._ttl - now
                fields = {"connected": b"0", "last_seen": str(beat).encode()}
                key = self._keys.session(session_id)
                if ttl <= 0:
                    if await self._store.hash_set_if(key, "replica", replica.encode(), fields, 0.001):
                        await self._store.delete(*self._companions(session_id))
                elif await self._store.hash_set_if(key, "replica", replica.encode(), fields, ttl):
                    await self._store.expire(self._companions(session_id), ttl)
                swept += 1
            await self._store.delete(sessions)
            await self._store.hash_delete(self._keys.replicas(), replica)
        return swept

    async def _last_beat(self, replica: str) -> float | None:
        """A replica's last beat, read at most once per a fifth of the beat interval (a dead replica
        is then noticed that much later, against DEAD_AFTER_BEATS intervals)."""
        now = time.monotonic()
        cached = self._beats.get(replica)
        if cached is not None and now - cached[0] < self._beat_every / 5:
            return cached[1]
        found = (await self._store.hash_get(self._keys.replicas(), [replica]) or {}).get(replica)
        beat = _float(found) if found is not None else None
        if len(self._beats) > 1024:
            self._beats.clear()  # replicas come and go; the readings are cheap to take again
        self._beats[replica] = (now, beat)
        return beat


def _float(raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        return 0.0
