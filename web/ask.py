"""Questions to the user, asked from any process; the answer comes back over the bus.

The asker (`AskUserMessage.send`) records the question in the session's open questions and sends it
to the session; the replica holding the socket (`AskRelay`) shows it and publishes the answer on the
question's reply channel, and shows the open questions again when the session resumes there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bus import Bus, Envelope, Target
from bus.envelope import new_id
from web import runtime
from web.context import ready_context
from web.errors import ContextError
from web.message import Message
from web.protocol import ANSWER, ASK

log = logging.getLogger("switchboard.web")

#: Longest answer accepted from a client.
MAX_ANSWER = 64 * 1024


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
        ctx = await ready_context()
        if ctx.session is None:
            raise ContextError("AskUserMessage needs a websocket context: init_ws_context(...)")
        session, bus = ctx.session, runtime.current().bus
        correlation = new_id()
        answered: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()

        async def on_reply(envelope: Envelope, offset: str, epoch: str) -> None:
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
        reply = Target("reply", correlation)
        await bus.subscribe(reply, on_reply)  # before asking, so no answer can be missed
        try:
            await bus.registry.open_ask(session.id, correlation, ask, self.timeout)
            await session.emit(ASK, ask)
            try:
                answer = await asyncio.wait_for(answered, self.timeout)
            except TimeoutError:
                bus.observer.asked("timeout")
                await session.emit("ask_timeout", {})
                return None
        finally:
            await bus.unsubscribe(reply)
            await bus.registry.close_ask(session.id, correlation)
        bus.observer.asked("answered")
        await session.emit("clear_ask", {})
        return answer


#: python-socketio's `AsyncServer.emit(event, data, to=sid, callback=...)`.
EmitWithAnswer = Callable[..., Awaitable[Any]]


class AskRelay:
    """The holder's side: shows questions on sockets and relays their answers to the askers."""

    def __init__(
        self, bus: Bus, emit: EmitWithAnswer, spawn: Callable[[Coroutine[Any, Any, Any]], object]
    ) -> None:
        self._bus = bus
        self._emit = emit
        self._spawn = spawn

    async def show(self, sid: str, asked: set[str], ask: dict[str, Any]) -> None:
        """Show a question on socket `sid` once (`asked` holds the ones already shown there)."""
        correlation, deadline = ask.get("correlationId"), ask.get("deadline")
        if not isinstance(correlation, str) or not isinstance(deadline, float | int):
            return
        remaining = deadline - time.time()
        if correlation in asked or remaining <= 0:
            return
        asked.add(correlation)
        spec = ask.get("spec")
        spec = {**(spec if isinstance(spec, dict) else {}), "timeout": round(remaining, 1)}

        def answered(*args: Any) -> None:
            self._spawn(self._answer(correlation, args[0] if args else None))

        await self._emit(ASK, {"msg": ask.get("msg"), "spec": spec}, to=sid, callback=answered)

    async def reask(self, session_id: str, sid: str, asked: set[str]) -> None:
        """Show the session's open questions on its new socket."""
        for ask in await self._bus.registry.open_asks(session_id):
            await self.show(sid, asked, ask)

    async def _answer(self, correlation: str, answer: Any) -> None:
        """Relay a valid answer to the asker; anything else is ignored (the question stays open)."""
        output = answer.get("output") if isinstance(answer, dict) else None
        if not isinstance(output, str) or len(output) > MAX_ANSWER:
            log.info("ignored an invalid answer to question %s", correlation)
            return
        payload = {"answer": {"output": output}}
        reply = Envelope(Target("reply", correlation), ANSWER, payload, self._bus.settings.replica_id)
        await self._bus.publish(reply)  # nobody listening: the question timed out (a late answer)
