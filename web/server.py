"""The socket server of one replica: issues and resumes sessions, delivers bus envelopes to sockets,
replays what a session missed, and relays questions and answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
import uuid
from http.cookies import SimpleCookie
from types import TracebackType
from typing import Any

import msgpack
import socketio

import web.context as _ctx
from bus import (
    Bus,
    BusUnavailable,
    Envelope,
    SessionRecord,
    Settings,
    Target,
    offset_key,
    valid_offset,
    valid_session_id,
)
from web.auth import AuthError, verify_jwt
from web.callbacks import Hook, hooks
from web.data import data_layer
from web.message import Message
from web.protocol import ASK, CONTROL_PREFIX, TAKEOVER
from web.session import LocalSession, WebsocketSession
from web.user import User

log = logging.getLogger("switchboard.web")

_MAX_INPUT = 64 * 1024
_THREAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ChatServer:
    """python-socketio server + bus for one process. `async with server:` runs it."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.bus = Bus(settings, on_restored=self._on_restored)
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            # Websocket only: a load balancer without sticky sessions cannot route HTTP long-polling.
            transports=["websocket"],
        )
        self.running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: dict[str, LocalSession] = {}
        self._by_sid: dict[str, LocalSession] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._endings: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        #: Local session ids per user: a user's channel is subscribed while this is non-empty.
        self._by_user: dict[str, set[str]] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        for event, handler in {
            "connect": self._on_connect,
            "disconnect": self._on_disconnect,
            "connection_successful": self._on_connection_successful,
            "client_message": self._on_client_message,
            "ack": self._on_ack,
        }.items():
            self.sio.on(event, handler)

    @property
    def settings(self) -> Settings:
        return self.bus.settings

    async def __aenter__(self) -> ChatServer:
        await self.bus.__aenter__()
        await self.bus.subscribe(Target("broadcast"), self._deliver_to_many)
        self._heartbeat = asyncio.create_task(self._beat(), name="switchboard-heartbeat")
        self.running = True
        self._loop = asyncio.get_running_loop()
        _ctx._server = self
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.running = False
        tasks = [self._heartbeat, *self._endings.values()]
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        # Sessions stay resumable on another replica for their grace period (rolling deploys).
        with contextlib.suppress(BusUnavailable):
            for local in list(self._sessions.values()):
                await self.bus.registry.detach(local.id, _pack(local.data), local.acked)
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.bus.__aexit__(exc_type, exc, tb)
        if _ctx._server is self:
            _ctx._server = None

    def serves_this_loop(self) -> bool:
        """Whether the server runs on the calling thread's event loop (so its bus can be used)."""
        try:
            return self.running and asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def local(self, session_id: str) -> LocalSession | None:
        return self._sessions.get(session_id)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def data_changed(self, session_id: str) -> None:
        """Save the session's custom keys and acked offset soon (coalesced), so they follow it."""
        if session_id not in self._dirty:
            self._dirty.add(session_id)
            self._spawn(self._save_state(session_id))

    # -- connecting ------------------------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            await self._connect(sid, environ, auth if isinstance(auth, dict) else {})
        except BusUnavailable as exc:
            log.error("refused a connection: %s", exc)
            raise _refused("bus_unavailable", "the message bus is unreachable") from exc

    async def _connect(self, sid: str, environ: dict[str, Any], auth: dict[str, Any]) -> None:
        user = self._login(environ, auth)
        resume_token = secrets.token_urlsafe(32)
        record = await self._resumable(auth.get("sessionId"), auth.get("resumeToken"))
        if record is not None:
            owner = record.user.get("identifier") if record.user else None
            if owner != (user.identifier if user else None):
                raise _refused("session_of_another_user", "this session belongs to another user")
            local = await self._resume(sid, record, resume_token)
            last_offset = auth.get("lastOffset")
            # Replay from what the client says it has, else from what it last acknowledged;
            # until the replay has caught up, live envelopes wait in `pending`.
            local.last_offset = last_offset if valid_offset(last_offset) else local.acked
            local.pending, local.replaying = [], True
        else:
            local = await self._create(sid, user, auth.get("threadId"), resume_token)
        await self._attach(local)
        # Emitted from the connect handler, this is queued before any other event for the socket.
        await self.sio.emit("session", {"sessionId": local.id, "resumeToken": resume_token}, to=sid)
        if record is not None:
            self._spawn(self._replay(local, resumed=True))
        elif isinstance(auth.get("threadId"), str) and local.thread_id == auth["threadId"]:
            await self._send_history(local)

    async def _send_history(self, local: LocalSession) -> None:
        """Give a client that resumes a thread of its own (see _create) its stored history."""
        layer = data_layer(self.bus)
        if layer is None or local.thread_id is None:
            return
        _, history = await layer.history(local.thread_id)
        events = [{"event": event, "message": message} for event, message in history]
        await self.sio.emit("thread_history", {"threadId": local.thread_id, "events": events}, to=local.sid)

    async def _may_use_thread(self, thread_id: str, user: User | None) -> bool:
        """A thread is its first writer's; ownerless threads are anyone's only without login."""
        layer = data_layer(self.bus)
        if layer is None:
            return True
        exists, owner = await layer.owner(thread_id)
        mine = user.identifier if user else None
        return not exists or owner == mine or (owner is None and not self.settings.login_required)

    def _login(self, environ: dict[str, Any], auth: dict[str, Any]) -> User | None:
        """The user of the handshake's token (`auth.token`, else the `access_token` cookie)."""
        if not self.settings.login_required:
            return None
        token = auth.get("token")
        if not token:
            cookies = SimpleCookie(environ.get("HTTP_COOKIE", ""))
            token = cookies["access_token"].value if "access_token" in cookies else None
        elif isinstance(token, str) and token.lower().startswith("bearer "):
            token = token[7:].strip()
        try:
            return verify_jwt(token, self.settings)
        except AuthError as exc:
            raise _refused(f"token_{exc.reason}", exc.message) from None

    async def _create(self, sid: str, user: User | None, thread_id: Any, resume_token: str) -> LocalSession:
        if not (isinstance(thread_id, str) and _THREAD_ID.fullmatch(thread_id)):
            thread_id = None
        elif not await self._may_use_thread(thread_id, user):
            log.info("thread %s is somebody else's: the new session gets a thread of its own", thread_id)
            thread_id = None
        if thread_id is None and self.settings.data_persistence:
            thread_id = str(uuid.uuid4())
        local = LocalSession(secrets.token_urlsafe(18), sid, user, thread_id)
        await self.bus.registry.create(
            local.id,
            user=user.to_dict() if user else None,
            thread_id=thread_id,
            resume_token=resume_token,
        )
        return local

    async def _resumable(self, session_id: Any, token: Any) -> SessionRecord | None:
        if not (valid_session_id(session_id) and isinstance(token, str) and token):
            return None
        record = await self.bus.registry.get(session_id)
        if record is None or not record.accepts(token):
            return None
        return record

    async def _resume(self, sid: str, record: SessionRecord, resume_token: str) -> LocalSession:
        if (ending := self._endings.pop(record.id, None)) is not None:
            ending.cancel()
        previous = self._sessions.get(record.id)
        if previous is not None:
            data, acked = previous.data, previous.acked
            await self._replace(previous)
        else:
            data, acked = _unpack(record.data), record.acked
            if record.connected and record.replica != self.settings.replica_id:
                # Published before we subscribe, so only the previous holder acts on it.
                takeover = Envelope(
                    Target.session(record.id),
                    TAKEOVER,
                    {"replica": self.settings.replica_id},
                    self.settings.replica_id,
                )
                await self.bus.publish(takeover)
        await self.bus.registry.attach(record.id, resume_token)
        user = User.from_dict(record.user) if record.user else None
        return LocalSession(record.id, sid, user, record.thread_id, data, started=True, acked=acked)

    async def _replace(self, local: LocalSession) -> None:
        """Close a socket whose session was resumed by a newer connection, telling it why."""
        local.replaced = True
        reason = {"reason": "session resumed by another connection"}
        await self.sio.emit("session_replaced", reason, to=local.sid)
        await self.sio.disconnect(local.sid)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        local = self._by_sid.pop(sid, None)
        if local is None or self._sessions.get(local.id) is not local:
            return  # replaced on this replica: the new socket owns the subscription
        self._dirty.discard(local.id)
        await self._detach(local)
        if local.replaced:
            return  # resumed on another replica, which now owns the registry entry
        await self.bus.registry.detach(local.id, _pack(local.data), local.acked)
        self._endings[local.id] = self._spawn(self._end_after_grace(local))
        log.info("session %s detached; resumable for %gs", local.id, self.settings.session_grace_seconds)

    async def _attach(self, local: LocalSession) -> None:
        """Hold the session here: its channel, and its user's channel while any of theirs is here."""
        self._sessions[local.id] = local
        self._by_sid[local.sid] = local
        await self.bus.subscribe(Target.session(local.id), self._deliver)
        if local.user is not None:
            mine = self._by_user.setdefault(local.user.identifier, set())
            mine.add(local.id)
            if len(mine) == 1:
                await self.bus.subscribe(Target("user", local.user.identifier), self._deliver_to_many)

    async def _detach(self, local: LocalSession) -> None:
        del self._sessions[local.id]
        await self.bus.unsubscribe(Target.session(local.id))
        if local.user is not None:
            mine = self._by_user.get(local.user.identifier, set())
            mine.discard(local.id)
            if not mine:
                self._by_user.pop(local.user.identifier, None)
                await self.bus.unsubscribe(Target("user", local.user.identifier))

    # -- client events ---------------------------------------------------------------------------

    async def _on_connection_successful(self, sid: str, data: Any = None) -> None:
        local = self._by_sid.get(sid)
        if local is None or local.started:
            return
        local.started = True
        if hooks.chat_start is not None:
            await self._run(local, hooks.chat_start)

    async def _on_client_message(self, sid: str, data: Any = None) -> None:
        local = self._by_sid.get(sid)
        message = data.get("message") if isinstance(data, dict) else None
        if local is None or not isinstance(message, dict):
            return
        output = message.get("output")
        if not isinstance(output, str) or len(output) > _MAX_INPUT:
            return
        msg_id = message.get("id")
        author = local.user.identifier if local.user else "User"
        incoming = Message(
            output,
            author,
            type="user_message",
            id=msg_id if isinstance(msg_id, str) and len(msg_id) <= 64 else None,
        )
        if hooks.message is not None:
            await self._run(local, hooks.message, incoming)

    async def _on_ack(self, sid: str, data: Any = None) -> bool:
        """The client processed everything up to `offset`: the default resume point from now on.

        Returns whether it was recorded (the client may ask for an acknowledgement).
        """
        local = self._by_sid.get(sid)
        offset = data.get("offset") if isinstance(data, dict) else None
        if local is None or not valid_offset(offset):
            return False
        if offset_key(offset) > offset_key(local.last_offset):
            return False  # cannot acknowledge what was never sent
        if offset_key(offset) > offset_key(local.acked):
            local.acked = offset
            self.data_changed(local.id)
        return True

    async def _run(self, local: LocalSession, hook: Hook, *args: Any) -> None:
        """Run a chat-module hook in the session's websocket context, between task_start/task_end."""
        session = WebsocketSession(local.id, local.user, local.thread_id, self.bus, self)
        ctx = await _ctx.init_ws_context(session)
        await ctx.emit("task_start", {})
        try:
            await hook(*args)
        except Exception:
            log.exception("chat hook %s failed for session %s", hook.__name__, local.id)
            await Message("An internal error occurred.", is_error=True).send()
        finally:
            await ctx.emit("task_end", {})

    # -- delivery --------------------------------------------------------------------------------

    async def _deliver(self, envelope: Envelope, offset: str) -> None:
        """Bus handler for session channels: forward client events, act on control events."""
        local = self._sessions.get(envelope.target.id)
        if local is None:
            return
        if envelope.event == TAKEOVER:
            if envelope.origin != self.settings.replica_id:
                await self._replace(local)
            return
        if envelope.event.startswith(CONTROL_PREFIX):
            return
        if local.pending is not None:
            local.pending.append((envelope, offset))
            return
        await self._emit(local, envelope, offset)

    async def _deliver_to_many(self, envelope: Envelope, offset: str) -> None:
        """Bus handler for user and broadcast channels: every matching local session, once each."""
        if envelope.event.startswith(CONTROL_PREFIX) or envelope.event == ASK:
            return
        if envelope.target.kind == "user":
            ids = self._by_user.get(envelope.target.id, set())
            targets = [self._sessions[i] for i in ids if i in self._sessions]
        else:
            targets = list(self._sessions.values())
        for local in targets:
            if local.pending is not None:
                local.pending.append((envelope, ""))
            else:
                await self._emit(local, envelope, "")

    async def _emit(self, local: LocalSession, envelope: Envelope, offset: str) -> bool:
        """Emit to the socket unless it is a duplicate; returns whether a durable event went out."""
        if envelope.event == ASK:
            await self._ask(local, envelope.payload)
            return False
        if not offset:
            await self.sio.emit(envelope.event, envelope.payload, to=local.sid)
            return False
        if offset_key(offset) <= offset_key(local.last_offset):
            return False  # already delivered: the seam between replay and live delivery
        local.last_offset = offset
        await self.sio.emit(envelope.event, {**envelope.payload, "offset": offset}, to=local.sid)
        return True

    def _start_replay(self, local: LocalSession) -> None:
        if local.replaying:
            local.replay_again = True  # the running replay reads the log once more before it ends
            return
        if local.pending is None:
            local.pending = []
        local.replaying = True
        self._spawn(self._replay(local, resumed=False))

    async def _replay(self, local: LocalSession, *, resumed: bool) -> None:
        """Emit the log after `local.last_offset` in bounded batches, then the live envelopes
        held meanwhile, until nothing new arrived; retried while Redis is unreachable.

        On a resume the client is told if part of what it asked for was trimmed away
        (`replay_truncated`) and how many messages it got (`replayed`); open questions are re-asked.
        """
        requested: str | None = local.last_offset
        replayed, backoff = 0, 0.05
        while self._sessions.get(local.id) is local:
            try:
                if resumed and requested is not None:
                    lost, first = await self.bus.lost_after(local.id, requested)
                    if lost:
                        truncated = {"requestedOffset": requested, "firstOffset": first}
                        await self.sio.emit("replay_truncated", truncated, to=local.sid)
                    requested = None
                replayed += await self._catch_up(local)
                break
            except BusUnavailable as exc:
                log.warning("replay for session %s waits for Redis: %s", local.id, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        if resumed and self._sessions.get(local.id) is local:
            await self.sio.emit("replayed", {"count": replayed}, to=local.sid)
            await self._reask(local)

    async def _catch_up(self, local: LocalSession) -> int:
        replayed = 0
        while True:
            while True:
                batch = await self.bus.read_log(local.id, local.last_offset)
                for offset, envelope in batch.entries:
                    replayed += await self._emit(local, envelope, offset)
                if batch.last:  # also past undecodable entries, which were skipped and counted
                    local.last_offset = max(local.last_offset, batch.last, key=offset_key)
                if not batch.more:
                    break
            assert local.pending is not None
            while local.pending:
                envelope, offset = local.pending.pop(0)
                await self._emit(local, envelope, offset)
            if not local.replay_again:
                # No await between this check and going live: nothing can slip in between.
                local.pending, local.replaying = None, False
                return replayed
            local.replay_again = False

    async def _on_restored(self) -> None:
        """Once a lost bus subscription is back, every session here catches up from its log."""
        for local in self._sessions.values():
            self._start_replay(local)

    # -- questions -------------------------------------------------------------------------------

    async def _ask(self, local: LocalSession, ask: dict[str, Any]) -> None:
        """Show a question on the socket; its answer goes back to the asker over the bus."""
        correlation, deadline = ask.get("correlationId"), ask.get("deadline")
        if not isinstance(correlation, str) or not isinstance(deadline, float | int):
            return
        remaining = deadline - time.time()
        if correlation in local.asked or remaining <= 0:
            return
        local.asked.add(correlation)
        spec = {**ask.get("spec", {}), "timeout": round(remaining, 1)}

        def answered(*args: Any) -> None:
            self._spawn(self._answer(correlation, args[0] if args else None))

        await self.sio.emit(ASK, {"msg": ask.get("msg"), "spec": spec}, to=local.sid, callback=answered)

    async def _answer(self, correlation: str, answer: Any) -> None:
        """Relay a valid answer to the asker; anything else is ignored (the question stays open)."""
        output = answer.get("output") if isinstance(answer, dict) else None
        if not isinstance(output, str) or len(output) > _MAX_INPUT:
            log.info("ignored an invalid answer to question %s", correlation)
            return
        reply = Envelope(
            Target("reply", correlation), "answer", {"answer": {"output": output}}, self.settings.replica_id
        )
        await self.bus.publish(reply)  # nobody listening: the question timed out (a late answer)

    async def _reask(self, local: LocalSession) -> None:
        """Re-show the session's open questions on its new socket."""
        pending = await self.bus.backend.hash_get(self.bus.registry.asks_key(local.id)) or {}
        for packed in pending.values():
            ask = _unpack(packed)
            if ask:
                await self._ask(local, ask)

    # -- lifecycle -------------------------------------------------------------------------------

    async def _end_after_grace(self, local: LocalSession) -> None:
        await asyncio.sleep(self.settings.session_grace_seconds)
        self._endings.pop(local.id, None)
        record = await self.bus.registry.get(local.id)
        if record is not None and (record.connected or record.replica != self.settings.replica_id):
            return  # resumed elsewhere
        if hooks.chat_end is not None:
            session = WebsocketSession(local.id, local.user, local.thread_id, self.bus, self)
            await _ctx.init_ws_context(session)
            try:
                await hooks.chat_end()
            except Exception:
                log.exception("on_chat_end failed for session %s", local.id)
        await self.bus.registry.delete(local.id)

    async def _save_state(self, session_id: str) -> None:
        await asyncio.sleep(0)  # coalesce the changes made in the same step
        self._dirty.discard(session_id)
        if (local := self._sessions.get(session_id)) is not None:
            await self.bus.registry.save_state(session_id, _pack(local.data), local.acked)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self.bus.registry.heartbeat(list(self._sessions))
            except BusUnavailable as exc:
                log.warning("session heartbeat failed: %s", exc)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task


def _refused(reason: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
    """A refusal the client receives as `connect_error` {message, data: {reason}}."""
    return socketio.exceptions.ConnectionRefusedError(message, {"reason": reason})


def _pack(data: dict[str, Any]) -> bytes:
    return msgpack.packb(data) if data else b""


def _unpack(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception:
        log.warning("ignored unreadable saved session state")
        return {}
    return value if isinstance(value, dict) else {}
