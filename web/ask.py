"""Questions to the user, asked from any process: the answer comes back over the bus."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack

from bus import Envelope, Target
from bus.envelope import new_id
from web.context import get_context
from web.errors import ContextError
from web.message import Message
from web.protocol import ASK


class AskUserMessage:
    """`answer = await AskUserMessage("Your name?", timeout=60).send()`: {"output": ...} or None.

    Works wherever a websocket context works. The replica holding the socket shows the question;
    if the socket moves to another replica meanwhile, that replica asks again. On timeout the
    client gets `ask_timeout` and `send()` returns None; an answer after that is ignored.
    """

    def __init__(self, content: str, author: str = "Assistant", timeout: float = 60.0) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.content = content
        self.author = author
        self.timeout = timeout

    async def send(self) -> dict[str, Any] | None:
        ctx = get_context()
        if ctx.session is None:
            raise ContextError("AskUserMessage needs a websocket context: `await init_ws_context(...)`")
        session, bus = ctx.session, ctx.session.bus
        correlation = new_id()
        answered: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()

        async def on_reply(envelope: Envelope, offset: str) -> None:
            if not answered.done():
                answer = envelope.payload.get("answer")
                answered.set_result(answer if isinstance(answer, dict) else None)

        message = Message(self.content, self.author)
        ask = {
            "msg": message.to_dict(),
            "spec": {"type": "text", "timeout": self.timeout, "step_id": message.id},
            "correlationId": correlation,
            "deadline": time.time() + self.timeout,
        }
        asks = bus.registry.asks_key(session.id)
        reply = Target("reply", correlation)
        await bus.subscribe(reply, on_reply)  # before asking, so no answer can be missed
        try:
            ttl = max(self.timeout, bus.settings.session_grace_seconds)
            await bus.backend.hash_set(asks, {correlation: msgpack.packb(ask)}, ttl)
            await session.emit(ASK, ask)
            try:
                answer = await asyncio.wait_for(answered, self.timeout)
            except TimeoutError:
                await session.emit("ask_timeout", {})
                return None
        finally:
            await bus.unsubscribe(reply)
            await bus.backend.hash_delete(asks, correlation)
        await session.emit("clear_ask", {})
        return answer
