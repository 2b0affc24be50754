"""Data persistence: a bounded history of messages per thread, behind a small interface."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any, Protocol

import msgpack

from bus import Bus

log = logging.getLogger("switchboard.web")


class DataLayer(Protocol):
    async def append(self, thread_id: str, event: str, message: dict[str, Any], owner: str | None) -> None:
        """Store one event; the first writer's user identifier (or None) becomes the thread's owner,
        and writes by anybody else are refused."""
        ...

    async def history(self, thread_id: str) -> tuple[str | None, list[tuple[str, dict[str, Any]]]]:
        """(owner, events oldest first, at most SWITCHBOARD_THREAD_HISTORY_LENGTH)."""
        ...

    async def owner(self, thread_id: str) -> tuple[bool, str | None]:
        """(whether the thread exists, its owner's identifier or None)."""
        ...


class BusDataLayer:
    """Thread histories as Redis lists (or in-memory lists on the embedded bus)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def append(self, thread_id: str, event: str, message: dict[str, Any], owner: str | None) -> None:
        """Store one event; the thread is its first writer's, and nobody else writes in it."""
        store, keys, settings = self._bus.store, self._bus.keys, self._bus.settings
        owner_key, history_key = keys.thread_owner(thread_id), keys.thread_history(thread_id)
        mine = (owner or "").encode()
        found = await store.claim(owner_key, mine, settings.thread_ttl_seconds)
        if found is not None and found != mine:
            log.warning("refused a write to thread %s by somebody who does not own it", thread_id)
            return
        await store.list_append(
            history_key,
            msgpack.packb([event, message]),
            maxlen=settings.thread_history_length,
            max_bytes=settings.thread_history_bytes,
            ttl=settings.thread_ttl_seconds,
        )
        await store.expire([owner_key], settings.thread_ttl_seconds)

    async def history(self, thread_id: str) -> tuple[str | None, list[tuple[str, dict[str, Any]]]]:
        _, owner = await self.owner(thread_id)
        events = []
        for item in await self._bus.store.list_items(self._bus.keys.thread_history(thread_id)):
            event, message = msgpack.unpackb(item, raw=False, strict_map_key=True)
            events.append((event, message))
        return owner, events

    async def owner(self, thread_id: str) -> tuple[bool, str | None]:
        found = await self._bus.store.get(self._bus.keys.thread_owner(thread_id))
        return found is not None, (found.decode() or None) if found else None


def data_layer(bus: Bus) -> DataLayer | None:
    """The data layer for `bus`, or None when data persistence is off."""
    return BusDataLayer(bus) if bus.settings.data_persistence else None


_THREAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


async def choose_thread(bus: Bus, requested: object, user: str | None) -> str | None:
    """The thread of a new session: the one the client asked for if it may use it, else a new one
    (with data persistence on) or none.

    A thread is its first writer's; ownerless threads are anyone's only without login.
    """
    thread_id = requested if isinstance(requested, str) and _THREAD_ID.fullmatch(requested) else None
    layer = data_layer(bus)
    if thread_id is not None and layer is not None:
        exists, owner = await layer.owner(thread_id)
        if exists and owner != user and not (owner is None and not bus.settings.login_required):
            log.info("thread %s is somebody else's: the new session gets a thread of its own", thread_id)
            thread_id = None
    if thread_id is None and bus.settings.data_persistence:
        thread_id = str(uuid.uuid4())
    return thread_id


async def thread_history(bus: Bus, thread_id: str) -> dict[str, Any] | None:
    """The `thread_history` payload for a client resuming a thread of its own, or None."""
    layer = data_layer(bus)
    if layer is None:
        return None
    _, history = await layer.history(thread_id)
    return {"threadId": thread_id, "events": [{"event": e, "message": m} for e, m in history]}
