"""The socket server of one replica: issues and resumes sessions, hands client events to the chat
module's hooks, and bus envelopes to the mailboxes of the sessions it holds."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from types import TracebackType
from typing import Any

import socketio

from bus import Bus, BusUnavailable, Envelope, SessionRecord, Settings, Target, valid_offset
from bus.registry import new_session_id, token_hash
from web import data, runtime
from web.ask import AskRelay
from web.auth import AuthError
from web.callbacks import hooks
from web.cors import socket_origins
from web.limits import HookQueue, Limits, Refused, retry_after_ms
from web.local import LocalSession, LocalSessions, unpack
from web.login import handshake_user
from web.mailbox import Mailbox
from web.message import Message
from web.protocol import TAKEOVER
from web.run import end_hook, run_hook
from web.sio import SocketManager, SocketServer, close_now
from web.user import User

log = logging.getLogger("switchboard.web")


class ChatServer:
    """python-socketio server + bus for one process. `async with server:` runs it."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.bus = Bus(settings, on_restored=self._on_restored)
        self.limits = Limits(self.settings)
        # A replay puts one batch at a time on a socket's queue, besides the live events.
        queued = self.settings.max_queued_events + self.settings.replay_batch
        manager = SocketManager(queued, self._slow_consumer)
        self.sio = SocketServer(
            async_mode="asgi",
            client_manager=manager,
            # Websocket only: a load balancer without sticky sessions cannot route HTTP long-polling.
            transports=["websocket"],
            # Room for the largest client_message; a bigger frame closes the socket.
            max_http_buffer_size=2 * self.settings.max_message_bytes + 16 * 1024,
            cors_allowed_origins=socket_origins(self.bus.settings),
        )
        self.running = False
        #: Set by a drain (web/drain.py): new handshakes are refused with the reason `draining`.
        self.draining = False
        #: The chat hooks running now, which a drain lets finish or cancels at its deadline.
        self.hook_tasks: set[asyncio.Task[Any]] = set()
        self.sessions = LocalSessions(self.bus, self._replace)
        self.asks = AskRelay(self.bus, self.sio.emit, self.sessions.spawn)
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
        await self.sessions.start()
        runtime.bind_server(self)
        self.running = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.running = False
        await self.sessions.stop()
        await self.bus.__aexit__(exc_type, exc, tb)
        runtime.unbind_server(self)

    def local(self, session_id: str) -> LocalSession | None:
        return self.sessions.by_id.get(session_id)

    def data_changed(self, session_id: str) -> None:
        self.sessions.data_changed(session_id)

    def _slow_consumer(self, sid: str) -> None:
        """A socket whose client stopped reading: close it; it resumes from its log when it returns."""
        self.limits.refused["slow_consumer"] += 1
        self.sessions.spawn(close_now(self.sio, sid))

    async def _on_restored(self) -> None:
        await self.sessions.restore()

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if self.draining:
            raise _refused("draining", "this replica is shutting down: connect again")
        auth = auth if isinstance(auth, dict) else {}
        try:
            async with self.sessions.one_handshake(auth.get("sessionId")):
                await self._connect(sid, environ, auth)
        except BusUnavailable as exc:
            log.error("refused a connection: %s", exc)
            raise _refused("bus_unavailable", "the message bus is unreachable") from exc
        except Refused as exc:
            raise _refused(exc.reason, exc.message, exc.retry_after) from None

    async def _connect(self, sid: str, environ: dict[str, Any], auth: dict[str, Any]) -> None:
        self.limits.handshake(str(environ.get("REMOTE_ADDR", "")))
        user = await self._login(environ, auth)
        resume_token = secrets.token_urlsafe(32)
        record = await self.bus.registry.resumable(auth.get("sessionId"), auth.get("resumeToken"))
        if user is not None:
            held = {s.id for s in self.sessions.for_user(user.identifier)} - {record.id if record else ""}
            self.limits.login(user.identifier, len(held))
        if record is not None:
            owner = record.user.get("identifier") if record.user else None
            if owner != (user.identifier if user else None):
                raise _refused("session_of_another_user", "this session belongs to another user")
            local = await self._resume(sid, record)
            # Replay from what the client says it has, else from what it last acknowledged.
            last_offset, last_epoch = auth.get("lastOffset"), auth.get("lastEpoch")
            epoch = last_epoch if isinstance(last_epoch, str) and len(last_epoch) <= 32 else None
            local.mailbox.hold(last_offset if valid_offset(last_offset) else local.mailbox.acked, epoch)
            claim = functools.partial(self.bus.registry.attach, record.id, resume_token)
        else:
            local = await self._create(sid, user, auth.get("threadId"))
            claim = functools.partial(
                self.bus.registry.create,
                local.id,
                user=user.to_dict() if user else None,
                thread_id=local.thread_id,
                resume_token=resume_token,
            )
        local.token_hash = token_hash(resume_token)
        history = None
        try:
            # What may fail first, the registry last: a handshake that fails on the way leaves the
            # session as it was (a resume keeps its token) and nothing of it here.
            if record is None and local.thread_id is not None and local.thread_id == auth.get("threadId"):
                history = await data.thread_history(self.bus, local.thread_id)
            await self.sessions.attach(local)
            await claim()
        except BusUnavailable:
            await self.sessions.release(local)
            if record is not None:  # if it was held here, its old socket is gone: record that
                self.sessions.end_after_grace(local, lambda: end_hook(local))
            raise
        # Emitted from the connect handler, this is queued before any other event for the socket.
        await self.sio.emit("session", {"sessionId": local.id, "resumeToken": resume_token}, to=sid)
        if record is not None:
            self.sessions.spawn(self._replay_resumed(local))
        elif history is not None:
            await self.sio.emit("thread_history", history, to=sid)

    async def _login(self, environ: dict[str, Any], auth: dict[str, Any]) -> User | None:
        try:
            return await handshake_user(environ, auth, self.settings)
        except AuthError as exc:
            raise _refused(f"token_{exc.reason}", exc.message) from None

    def _held(
        self,
        session_id: str,
        sid: str,
        user: User | None,
        thread_id: str | None,
        *,
        state: dict[str, Any] | None = None,
        acked: str = "0-0",
    ) -> LocalSession:
        """A session held on socket `sid`, with its mailbox (resumed ones: `state` and `acked`)."""
        socket = _Socket(self, sid)
        mailbox = Mailbox(session_id, self.bus, socket.emit, socket.show, acked=acked, drained=socket.drained)
        hooks = HookQueue(self.sessions.spawn, self.settings.hook_queue)
        events, started = self.limits.events(), state is not None
        args = (session_id, sid, user, thread_id, mailbox, hooks, events, state or {}, started)
        return LocalSession(*args, asked=socket.asked)

    async def _create(self, sid: str, user: User | None, thread_id: Any) -> LocalSession:
        thread_id = await data.choose_thread(self.bus, thread_id, user.identifier if user else None)
        return self._held(new_session_id(), sid, user, thread_id)

    async def _resume(self, sid: str, record: SessionRecord) -> LocalSession:
        self.sessions.cancel_ending(record.id)
        previous = self.sessions.by_id.get(record.id)
        if previous is not None:
            state, acked = previous.data, previous.mailbox.acked
            await self._replace(previous)
        else:
            state, acked = unpack(record.data), record.acked
            if record.connected and record.replica != self.settings.replica_id:
                # Published before we subscribe, so only the previous holder acts on it.
                payload = {"replica": self.settings.replica_id}
                await self.bus.publish(
                    Envelope(Target.session(record.id), TAKEOVER, payload, payload["replica"])
                )
        user = User.from_dict(record.user) if record.user else None
        return self._held(record.id, sid, user, record.thread_id, state=state, acked=acked)

    async def _replace(self, local: LocalSession) -> None:
        """Close a socket whose session was resumed by a newer connection, telling it why."""
        local.replaced = True
        await self.sio.emit(
            "session_replaced", {"reason": "session resumed by another connection"}, to=local.sid
        )
        await self.sio.disconnect(local.sid)

    async def _replay_resumed(self, local: LocalSession) -> None:
        await local.mailbox.replay(resumed=True)
        if local.mailbox.open:
            await self.asks.reask(local.id, local.sid, local.asked)

    async def _on_disconnect(self, sid: str, *args: Any) -> None:
        local = self.sessions.by_sid.pop(sid, None)
        if local is None or self.sessions.by_id.get(local.id) is not local:
            return  # replaced on this replica: the new socket owns the subscription
        await self.sessions.detach(local)
        if local.replaced:
            return  # resumed on another replica, which now owns the registry entry
        self.sessions.end_after_grace(local, lambda: end_hook(local))

    def _client(self, sid: str) -> LocalSession | None:
        """The session of a client event, if the socket's event budget allows one more."""
        local = self.sessions.by_sid.get(sid)
        if local is None or not (wait := local.events.take()):
            return local
        self.limits.refused["events"] += 1
        if local.events.tell(wait):
            payload = {"reason": "events", "retryAfterMs": retry_after_ms(wait)}
            self.sessions.spawn(self.sio.emit("rate_limited", payload, to=sid))
        return None

    async def _on_connection_successful(self, sid: str, *args: Any) -> None:
        local = self._client(sid)
        if local is None or local.started:
            return
        local.started = True
        if hooks.chat_start is not None:
            local.hooks.submit(functools.partial(run_hook, local, hooks.chat_start, self.hook_tasks))

    async def _on_client_message(self, sid: str, data: Any = None, *args: Any) -> None:
        local = self._client(sid)
        message = data.get("message") if isinstance(data, dict) else None
        if local is None or not isinstance(message, dict):
            return
        output, msg_id = message.get("output"), message.get("id")
        if not isinstance(output, str):
            return
        if len(output.encode()) > self.settings.max_message_bytes:
            self.limits.refused["too_large"] += 1
            refusal = {"reason": "too_large", "limit": self.settings.max_message_bytes}
            await self.sio.emit("message_refused", refusal, to=sid)
            return
        author = local.user.identifier if local.user else "User"
        msg_id = msg_id if isinstance(msg_id, str) and len(msg_id) <= 64 else None
        incoming = Message(output, author, type="user_message", id=msg_id)
        if hooks.message is not None and not local.hooks.submit(
            functools.partial(run_hook, local, hooks.message, self.hook_tasks, incoming)
        ):
            self.limits.refused["hook_queue"] += 1
            await self.sio.emit("message_refused", {"reason": "busy"}, to=sid)

    async def _on_ack(self, sid: str, data: Any = None, *args: Any) -> bool:
        """The client processed everything up to `offset` (its resume point); answers if recorded."""
        local = self._client(sid)
        offset = data.get("offset") if isinstance(data, dict) else None
        if local is None or not valid_offset(offset) or not local.mailbox.ack(offset):
            return False
        self.sessions.data_changed(local.id)
        return True


class _Socket:
    """What a held session's mailbox does to its socket: one small object per session (three
    partials with their argument dicts would be a kilobyte)."""

    __slots__ = ("_server", "asked", "sid")

    def __init__(self, server: ChatServer, sid: str) -> None:
        self._server, self.sid = server, sid
        #: Correlation ids of the questions shown on this socket.
        self.asked: set[str] = set()

    async def emit(self, event: str, payload: dict[str, Any]) -> None:
        await self._server.sio.emit(event, payload, to=self.sid)

    async def show(self, ask: dict[str, Any]) -> None:
        await self._server.asks.show(self.sid, self.asked, ask)

    async def drained(self) -> None:
        """A replay's pace: the socket wrote what it was given (else it is a slow consumer)."""
        await self._server.sio.manager.drained(self.sid, self._server.settings.redis_timeout_seconds * 2)


def _refused(
    reason: str, message: str, retry_after: float = 0.0
) -> socketio.exceptions.ConnectionRefusedError:
    """A refusal the client receives as `connect_error` {message, data: {reason[, retryAfterMs]}}."""
    data: dict[str, Any] = {"reason": reason}
    if retry_after:
        data["retryAfterMs"] = retry_after_ms(retry_after)
    return socketio.exceptions.ConnectionRefusedError(message, data)
