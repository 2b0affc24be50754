"""The user a session or request belongs to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    identifier: str
    display_name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Scopes granted by the user's token, e.g. `sessions:send` for service principals.
    scopes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "display_name": self.display_name,
            "metadata": self.metadata,
            "scopes": list(self.scopes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> User:
        return cls(
            str(data["identifier"]),
            data.get("display_name"),
            dict(data.get("metadata") or {}),
            tuple(data.get("scopes") or ()),
        )
