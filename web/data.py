"""Data persistence: a bounded history of messages per thread, behind a small interface."""

from __future__ import annotations

from typing import Any, Protocol

import msgpack

from bus import Bus

#: The events a thread history keeps; replaying them in order rebuilds the conversation.
HISTORY_EVENTS = frozenset({"new_message", "update_message", "delete_message"})
#: A thread's history and owner expire after this long without a new message.
THREAD_TTL_SECONDS = 30 * 24 * 3600.0


class DataLayer(Protocol):
    async def append(self, thread_id: str, event: str, message: dict[str, Any], owner: str | None) -> None:
        """Store one event; the first writer's user identifier (or None) becomes the thread's owner."""
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

    def _key(self, thread_id: str, part: str) -> str:
        return f"{self._bus.settings.key_prefix}:thread:{{{thread_id}}}:{part}"

    async def append(self, thread_id: str, event: str, message: dict[str, Any], owner: str | None) -> None:
        backend = self._bus.backend
        await backend.claim(self._key(thread_id, "owner"), (owner or "").encode(), THREAD_TTL_SECONDS)
        value = msgpack.packb([event, message])
        await backend.list_append(
            self._key(thread_id, "history"), value, self._bus.settings.thread_history_length
        )
        await backend.expire(
            [self._key(thread_id, "owner"), self._key(thread_id, "history")], THREAD_TTL_SECONDS
        )

    async def history(self, thread_id: str) -> tuple[str | None, list[tuple[str, dict[str, Any]]]]:
        _, owner = await self.owner(thread_id)
        events = []
        for item in await self._bus.backend.list_items(self._key(thread_id, "history")):
            event, message = msgpack.unpackb(item, raw=False, strict_map_key=True)
            events.append((event, message))
        return owner, events

    async def owner(self, thread_id: str) -> tuple[bool, str | None]:
        found = await self._bus.backend.get(self._key(thread_id, "owner"))
        return found is not None, (found.decode() or None) if found else None


def data_layer(bus: Bus) -> DataLayer | None:
    """The data layer for `bus`, or None when data persistence is off."""
    return BusDataLayer(bus) if bus.settings.data_persistence else None
