"""The session registry: which sessions exist, whose they are, and which replica holds each one."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from bus.backend import Backend
from bus.settings import Settings

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


def valid_session_id(value: object) -> bool:
    """Whether `value` could be a session id this project issued (checked before any lookup)."""
    return isinstance(value, str) and _SESSION_ID.fullmatch(value) is not None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What any process can learn about a session."""

    id: str
    #: The user the session is bound to, as `User.to_dict()` gives it; None without login.
    user: dict[str, Any] | None
    thread_id: str | None
    replica: str
    connected: bool
    created_at: float
    last_seen: float
    token_hash: str
    #: The session's custom `user_session` keys, msgpack-encoded by the replica that holds it.
    data: bytes
    #: The highest log offset the client acknowledged ("0-0" if none).
    acked: str

    def accepts(self, resume_token: str) -> bool:
        """Whether `resume_token` is this session's, compared in constant time."""
        return hmac.compare_digest(token_hash(resume_token), self.token_hash)


class SessionRegistry:
    """Session records as Redis hashes that expire a grace period after their last heartbeat."""

    def __init__(self, backend: Backend, settings: Settings) -> None:
        self._backend = backend
        self._prefix = settings.key_prefix
        self._ttl = settings.session_grace_seconds
        self._replica = settings.replica_id

    def key(self, session_id: str) -> str:
        return f"{self._prefix}:session:{{{session_id}}}:info"

    def asks_key(self, session_id: str) -> str:
        """The session's open questions (correlation id -> ask), re-asked when it resumes."""
        return f"{self._prefix}:session:{{{session_id}}}:asks"

    def log_key(self, session_id: str) -> str:
        """The session's message log (a Redis Stream), in the same hash slot as its record."""
        return f"{self._prefix}:session:{{{session_id}}}:log"

    async def create(
        self,
        session_id: str,
        *,
        user: dict[str, Any] | None,
        thread_id: str | None,
        resume_token: str,
    ) -> None:
        now = str(time.time()).encode()
        fields = {
            "user": msgpack.packb(user) if user else b"",
            "thread_id": (thread_id or "").encode(),
            "replica": self._replica.encode(),
            "connected": b"1",
            "created_at": now,
            "last_seen": now,
            "token_hash": token_hash(resume_token).encode(),
            "data": b"",
        }
        await self._backend.hash_set(self.key(session_id), fields, self._ttl)

    async def get(self, session_id: str) -> SessionRecord | None:
        if not valid_session_id(session_id):
            return None
        found = await self._backend.hash_get(self.key(session_id))
        if found is None or "token_hash" not in found:
            return None
        text = {k: v.decode(errors="replace") for k, v in found.items() if k not in ("data", "user")}
        user = msgpack.unpackb(found["user"]) if found.get("user") else None
        return SessionRecord(
            id=session_id,
            user=user if isinstance(user, dict) else None,
            thread_id=text.get("thread_id") or None,
            replica=text.get("replica", ""),
            connected=text.get("connected") == "1",
            created_at=float(text.get("created_at", 0)),
            last_seen=float(text.get("last_seen", 0)),
            token_hash=text["token_hash"],
            data=found.get("data", b""),
            acked=text.get("acked") or "0-0",
        )

    async def attach(self, session_id: str, resume_token: str) -> None:
        """Record that this replica now holds the session's socket, under a fresh resume token."""
        fields = {
            "token_hash": token_hash(resume_token).encode(),
            "replica": self._replica.encode(),
            "connected": b"1",
            "last_seen": str(time.time()).encode(),
        }
        await self._backend.hash_set(self.key(session_id), fields, self._ttl)
        await self._backend.expire(self._companions(session_id), self._ttl)

    async def detach(self, session_id: str, data: bytes, acked: str) -> None:
        """Record a disconnect: the session (and its log) stays resumable for the grace period."""
        fields = {"connected": b"0", "last_seen": str(time.time()).encode()}
        await self._backend.hash_set(self.key(session_id), fields | _state(data, acked), self._ttl)
        await self._backend.expire(self._companions(session_id), self._ttl)

    def _companions(self, session_id: str) -> list[str]:
        """The keys that live exactly as long as the session record."""
        return [self.log_key(session_id), self.asks_key(session_id)]

    async def save_state(self, session_id: str, data: bytes, acked: str) -> None:
        """Save what follows the session to another replica: custom keys and the acked offset."""
        await self._backend.hash_set(self.key(session_id), _state(data, acked), self._ttl)

    async def heartbeat(self, session_ids: Iterable[str]) -> None:
        keys = [key for s in session_ids for key in (self.key(s), *self._companions(s))]
        await self._backend.expire(keys, self._ttl)

    async def delete(self, session_id: str) -> None:
        await self._backend.delete(self.key(session_id), *self._companions(session_id))


def _state(data: bytes, acked: str) -> dict[str, bytes]:
    return {"data": data, "acked": acked.encode()}
