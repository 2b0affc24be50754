"""Messages shown in the chat: send, update, remove and stream them, from any context."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from web.context import _context, ready_context


class Message:
    """A chat message; the client events it emits are listed in docs/protocol.md."""

    def __init__(
        self,
        content: str = "",
        author: str = "Assistant",
        *,
        type: str = "assistant_message",
        metadata: dict[str, Any] | None = None,
        id: str | None = None,
        parent_id: str | None = None,
        is_error: bool = False,
    ) -> None:
        self.id = id or str(uuid.uuid4())
        self.content = content
        self.author = author
        self.type = type
        self.metadata = metadata or {}
        self.parent_id = parent_id
        self.is_error = is_error
        self.created_at = datetime.now(UTC).isoformat()
        self.streaming = False

    def to_dict(self, thread_id: str | None = None) -> dict[str, Any]:
        """The client's message dict; `threadId` comes from the current context unless given."""
        ctx = _context.get()
        if thread_id is None and ctx is not None and (ctx.session is None or ctx.session.resolved):
            thread_id = ctx.thread_id
        return {
            "id": self.id,
            "threadId": thread_id,
            "parentId": self.parent_id,
            "createdAt": self.created_at,
            "output": self.content,
            "name": self.author,
            "type": self.type,
            "streaming": self.streaming,
            "isError": self.is_error,
            "metadata": self.metadata,
        }

    async def send(self) -> Message:
        """Show the message (`new_message`), or finish a stream (`update_message`)."""
        ctx = await ready_context()
        if self.streaming:
            self.streaming = False
            await ctx.emit("update_message", self.to_dict())
        else:
            await ctx.emit("new_message", self.to_dict())
        return self

    async def update(self) -> Message:
        ctx = await ready_context()
        await ctx.emit("update_message", self.to_dict())
        return self

    async def remove(self) -> None:
        ctx = await ready_context()
        await ctx.emit("delete_message", self.to_dict())

    async def stream_token(self, token: str, is_sequence: bool = False) -> None:
        """Append `token` (or replace the content, if `is_sequence`); the first one starts the stream."""
        ctx = await ready_context()
        self.content = token if is_sequence else self.content + token
        if not self.streaming:
            self.streaming = True
            await ctx.emit("stream_start", self.to_dict())
            return
        payload = {"id": self.id, "token": token, "isSequence": is_sequence, "isInput": False}
        await ctx.emit("stream_token", payload)


def client_event(
    content: str,
    author: str = "Assistant",
    *,
    event: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The client event for a message sent from outside a chat context (worker, webhook).

    Without `event`, a `new_message`; with it, that custom event with {content, author, metadata}.
    """
    if event is None:
        return "new_message", Message(content, author, metadata=metadata).to_dict()
    return event, {"content": content, "author": author, "metadata": metadata or {}}
