"""Data persistence: a bounded history of messages per thread, behind a small interface."""

from __future__ import annotations

from typing import Any, Protocol

import msgpack

from bus import Bus

#: The events a thread history keeps; replaying them in order rebuilds the conversation.
HISTORY_EVENTS = frozenset({"new_message", "update_message", "delete_message"})


class DataLayer(Protocol):
    async def append(self, thread_id: str, event: str, message: dict[str, Any]) -> None: ...

    async def history(self, thread_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The thread's events, oldest first (at most SWITCHBOARD_THREAD_HISTORY_LENGTH)."""
        ...


class BusDataLayer:
    """Thread histories as Redis lists (or in-memory lists on the embedded bus)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    def _key(self, thread_id: str) -> str:
        return f"{self._bus.settings.key_prefix}:thread:{{{thread_id}}}:history"

    async def append(self, thread_id: str, event: str, message: dict[str, Any]) -> None:
        value = msgpack.packb([event, message])
        await self._bus.backend.list_append(
            self._key(thread_id), value, self._bus.settings.thread_history_length
        )

    async def history(self, thread_id: str) -> list[tuple[str, dict[str, Any]]]:
        events = []
        for item in await self._bus.backend.list_items(self._key(thread_id)):
            event, message = msgpack.unpackb(item, raw=False, strict_map_key=True)
            events.append((event, message))
        return events


def data_layer(bus: Bus) -> DataLayer | None:
    """The data layer for `bus`, or None when data persistence is off."""
    return BusDataLayer(bus) if bus.settings.data_persistence else None
