"""The session registry: which sessions exist, whose they are, and which replica holds each one."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

import msgpack

from bus.backend import Store
from bus.keys import Keys
from bus.settings import Settings

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


def valid_session_id(value: object) -> TypeGuard[str]:
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

    def __init__(self, store: Store, keys: Keys, settings: Settings) -> None:
        self._store = store
        self._keys = keys
        self._ttl = settings.session_grace_seconds
        self._replica = settings.replica_id

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
        await self._store.hash_set(self._keys.session(session_id), fields, self._ttl)

    async def get(self, session_id: str) -> SessionRecord | None:
        if not valid_session_id(session_id):
            return None
        found = await self._store.hash_get(self._keys.session(session_id))
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
        await self._store.hash_set(self._keys.session(session_id), fields, self._ttl)
        await self._store.expire(self._companions(session_id), self._ttl)

    async def detach(self, session_id: str, data: bytes, acked: str) -> None:
        """Record a disconnect: the session (and its log) stays resumable for the grace period."""
        fields = {"connected": b"0", "last_seen": str(time.time()).encode()}
        await self._store.hash_set(self._keys.session(session_id), fields | _state(data, acked), self._ttl)
        await self._store.expire(self._companions(session_id), self._ttl)

    def _companions(self, session_id: str) -> list[str]:
        """The keys that live exactly as long as the session record."""
        return [self._keys.session_log(session_id), self._keys.session_asks(session_id)]

    async def save_state(self, session_id: str, data: bytes, acked: str) -> None:
        """Save what follows the session to another replica: custom keys and the acked offset."""
        await self._store.hash_set(self._keys.session(session_id), _state(data, acked), self._ttl)

    async def heartbeat(self, session_ids: Iterable[str]) -> None:
        keys = [key for s in session_ids for key in (self._keys.session(s), *self._companions(s))]
        await self._store.expire(keys, self._ttl)

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


def _state(data: bytes, acked: str) -> dict[str, bytes]:
    return {"data": data, "acked": acked.encode()}
