"""Chainlit on the Switchboard bus: a real Chainlit app whose sessions are reachable from any process.

Adoption is one line next to Chainlit's own mount (same `SWITCHBOARD_` settings as the rest):

    from chainlit.utils import mount_chainlit
    from web.chainlit_bridge import enable_chainlit_bus

    mount_chainlit(app=app, target="my_cl_app.py", path="/chainlit")
    enable_chainlit_bus(app)

Then, in every process, each Chainlit `WebsocketSession` whose socket is here is recorded in the
session registry and its bus channel subscribed; `WebsocketSession.get_by_id(id)` called by the app's
code returns the local session, or a `RemoteSession` whose `emit` publishes to the bus and whose
`emit_call` (AskUserMessage) waits for the answer over the bus. A worker uses
`workers.chainlit_context(session_id)`. docs/chainlit.md says what works across processes and what
stays process-local.

This is the only module that touches Chainlit's internals. All of them are listed in `INTERNALS` and
checked by `check_chainlit()` (ChainlitIncompatible, naming the installed version, if one is missing or
changed); the patches are the three rows of `PATCHES`, applied by `enable_chainlit_bus` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from types import TracebackType
from typing import Any

import socketio
from chainlit.session import BaseSession, WebsocketSession
from chainlit.user import User as ChainlitUser
from chainlit.version import __version__ as CHAINLIT_VERSION
from fastapi import FastAPI

from bus import (
    Bus,
    BusUnavailable,
    Envelope,
    SessionNotFound,
    Settings,
    Target,
    get_settings,
    valid_session_id,
)
from bus.envelope import new_id
from bus.registry import Held, token_hash

log = logging.getLogger("switchboard.chainlit")

# The modules themselves (`import chainlit.context as m` would give the `chainlit.context` LazyProxy
# that chainlit/__init__.py puts over the submodule's name).
cl_session = importlib.import_module("chainlit.session")
cl_context = importlib.import_module("chainlit.context")
cl_emitter = importlib.import_module("chainlit.emitter")

#: The Chainlit minor version the bridge is tested with (the `chainlit` extra pins it).
TESTED_SERIES = "2.12"

#: Every Chainlit internal the bridge relies on; `check_chainlit()` verifies each one.
INTERNALS = (
    "chainlit.session.ws_sessions_id / ws_sessions_sid: module-level dicts of the process's sessions",
    "chainlit.session.WebsocketSession: classmethods get(socket_id), get_by_id(session_id), "
    "require(socket_id); restore(new_socket_id); __init__(id, socket_id, emit, emit_call, user_env, "
    "client_type, environ, thread_id, user, token, chat_profile) which registers the session; "
    "instance attributes socket_id, emit, emit_call, restored, thread_queues, mcp_sessions, language, "
    "config (set by the stand-in, which skips __init__)",
    "chainlit.session.BaseSession.__init__(id, client_type, thread_id, user, token, user_env, "
    "environ, chat_profile), which gives a session without a thread a placeholder thread id (a str)",
    "WebsocketSession.delete(): a coroutine that forgets the session (a refused cross-replica restore)",
    "the emit_call closure Chainlit's connect handler gives a session (chainlit/socket.py): "
    "emit_call_fn(event, data, timeout)",
    "Chainlit calls WebsocketSession.get_by_id directly from its own modules (chainlit.*), so the "
    "calling frame tells its lookups from the app's",
    "chainlit.context.init_ws_context(session_or_sid): a WebsocketSession instance is used as given",
    "chainlit.emitter.ChainlitEmitter.emit / emit_call: properties reading session.emit / emit_call; "
    "an ask's timeout is socketio.exceptions.TimeoutError",
    "chainlit.server.sio: the socketio.AsyncServer whose handlers['/'] hold Chainlit's "
    "connect(sid, environ, auth) and disconnect(sid) (chainlit/socket.py)",
    "chainlit.user.User(identifier, display_name, metadata)",
)

#: Every patch, applied by `enable_chainlit_bus` only (once per process).
PATCHES = (
    "WebsocketSession.get_by_id: for callers outside the chainlit package, a session not held here "
    "is a RemoteSession (Chainlit's own callers keep the local lookup)",
    "chainlit.server.sio.handlers['/']['connect']: after Chainlit's handler, record the session in "
    "the registry and subscribe its channel",
    "chainlit.server.sio.handlers['/']['disconnect']: after Chainlit's handler, unsubscribe and "
    "mark the session disconnected in the registry",
)

#: A reply to an ask: `answer` (what the client acknowledged) or `timeout`.
_ANSWER = "answer"
#: Default of python-socketio's `call` when Chainlit passes no timeout.
_CALL_TIMEOUT = 60.0


class ChainlitIncompatible(RuntimeError):
    """The installed Chainlit lacks an internal the bridge relies on (or it changed shape)."""


def check_chainlit(*, server: bool = True) -> None:
    """Verify every internal of `INTERNALS`; ChainlitIncompatible names the version and what changed.

    `server=False` skips the socket server (workers do not import chainlit.server).
    """
    problems: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    need(
        isinstance(getattr(cl_session, "ws_sessions_id", None), dict), "chainlit.session.ws_sessions_id dict"
    )
    need(
        isinstance(getattr(cl_session, "ws_sessions_sid", None), dict),
        "chainlit.session.ws_sessions_sid dict",
    )
    for name in ("get", "get_by_id", "require"):
        need(
            isinstance(inspect.getattr_static(WebsocketSession, name, None), classmethod),
            f"classmethod WebsocketSession.{name}",
        )
    need(callable(getattr(WebsocketSession, "restore", None)), "WebsocketSession.restore")
    need(
        _has_params(
            WebsocketSession.__init__,
            "id socket_id emit emit_call user_env client_type environ thread_id user token chat_profile",
        ),
        "WebsocketSession.__init__(id, socket_id, emit, emit_call, user_env, client_type, environ, "
        "thread_id, user, token, chat_profile)",
    )
    need(
        _has_params(
            BaseSession.__init__, "id client_type thread_id user token user_env environ chat_profile"
        ),
        "BaseSession.__init__(id, client_type, thread_id, user, token, user_env, environ, chat_profile)",
    )
    need(callable(getattr(WebsocketSession, "get_config", None)), "WebsocketSession.get_config")
    need(
        inspect.iscoroutinefunction(getattr(WebsocketSession, "delete", None)),
        "coroutine WebsocketSession.delete()",
    )
    probe = object.__new__(BaseSession)
    with contextlib.suppress(Exception):
        BaseSession.__init__(
            probe, id="probe", client_type="webapp", thread_id=None, user=None, token=None, user_env={}
        )
    need(
        isinstance(getattr(probe, "thread_id", None), str) and bool(probe.thread_id),
        "BaseSession.__init__ giving a session without a thread a placeholder thread id",
    )
    need(
        _has_params(getattr(cl_context, "init_ws_context", None), "session_or_sid"),
        "chainlit.context.init_ws_context(session_or_sid)",
    )
    emitter = getattr(cl_emitter, "ChainlitEmitter", None)
    for name in ("emit", "emit_call"):
        need(
            emitter is not None and isinstance(inspect.getattr_static(emitter, name, None), property),
            f"property ChainlitEmitter.{name}",
        )
    need(
        getattr(cl_emitter, "TimeoutError", None) is socketio.exceptions.TimeoutError,
        "chainlit.emitter catching socketio.exceptions.TimeoutError for asks",
    )
    need(_has_params(ChainlitUser, "identifier display_name metadata"), "chainlit.user.User(identifier, ...)")
    if server:
        import chainlit.server as cl_server

        sio = getattr(cl_server, "sio", None)
        handlers = sio.handlers.get("/", {}) if isinstance(sio, socketio.AsyncServer) else {}
        need(isinstance(sio, socketio.AsyncServer), "chainlit.server.sio (a socketio.AsyncServer)")
        need(
            _has_params(handlers.get("connect"), "sid environ auth"),
            "Chainlit's socket handler connect(sid, environ, auth)",
        )
        need(_has_params(handlers.get("disconnect"), "sid"), "Chainlit's socket handler disconnect(sid)")
        import chainlit.socket as cl_socket

        source = inspect.getsource(cl_socket)
        need(
            "def emit_call_fn(event" in source and "data, timeout)" in source,
            "chainlit/socket.py's emit_call_fn(event, data, timeout)",
        )
    if problems:
        raise ChainlitIncompatible(
            f"Chainlit {CHAINLIT_VERSION} is installed, but the Switchboard bridge is tested with "
            f"Chainlit {TESTED_SERIES}.* and relies on internals that are missing or changed: "
            + "; ".join(problems)
            + f". Install `switchboard[chainlit]` (chainlit=={TESTED_SERIES}.*) or update "
            "web/chainlit_bridge.py (INTERNALS lists what it relies on)."
        )


def _has_params(function: object, names: str) -> bool:
    if not callable(function):
        return False
    try:
        found = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return all(name in found for name in names.split())


# -- the stand-in for a session held by another process ---------------------------------------


class RemoteSession(WebsocketSession):
    """A Chainlit session whose socket is in another process: `emit` and `emit_call` go over the bus.

    Made by `WebsocketSession.get_by_id` (patched) and `workers.chainlit_context`; never registered in
    Chainlit's session tables. The session is looked up in the registry at the first emit (or when
    awaited: `await WebsocketSession.get_by_id(id)`): unknown or expired raises SessionNotFound, which
    `enable_chainlit_bus` answers 404; the record gives the stand-in the real thread id and user.
    """

    def __init__(self, session_id: str, bus: Bus) -> None:
        # Not WebsocketSession.__init__: it would put this stand-in into Chainlit's session tables.
        BaseSession.__init__(
            self, id=session_id, client_type="webapp", thread_id=None, user=None, token=None, user_env={}
        )
        self.socket_id = ""
        self.restored = False
        self.thread_queues = {}
        self.mcp_sessions = {}
        self.language = "en-US"
        self.config = self.get_config()
        self.emit = self._emit  # type: ignore[assignment]  # Chainlit's emit_fn returns an awaitable too
        self.emit_call = self._emit_call
        self.bus = bus
        self._resolved = False
        #: The thread id Chainlit gave the stand-in before its record was read.
        self._placeholder_thread = self.thread_id

    def __await__(self) -> Generator[Any, None, RemoteSession]:
        return self.resolve().__await__()

    async def resolve(self) -> RemoteSession:
        """Read the session's record once: SessionNotFound if it is unknown or expired."""
        if not self._resolved:
            record = await self.bus.registry.get(self.id)
            if record is None:
                raise SessionNotFound(self.id)
            if record.thread_id:
                self.thread_id = record.thread_id
            if record.user and isinstance(record.user.get("identifier"), str):
                self.user = ChainlitUser(
                    identifier=record.user["identifier"],
                    display_name=record.user.get("display_name"),
                    metadata=record.user.get("metadata") or {},
                )
            self._resolved = True
        return self

    def _envelope(self, event: str, payload: dict[str, Any]) -> Envelope:
        return Envelope(Target.session(self.id), event, payload, self.bus.settings.replica_id)

    def _data(self, data: Any) -> Any:
        # Steps built before the record was read carry the placeholder thread id (a fresh UUID).
        if self.thread_id == self._placeholder_thread:
            return data
        return _replaced(data, self._placeholder_thread, self.thread_id)

    async def _emit(self, event: str, data: Any) -> None:
        await self.resolve()
        await self.bus.send(self._envelope(event, {"data": self._data(data)}), durable=False)

    async def _emit_call(self, event: str, data: Any, timeout: float | None) -> Any:  # noqa: ASYNC109
        """Chainlit's `sio.call` across processes: the holder asks its socket and relays the ack."""
        await self.resolve()
        wait = float(timeout) if timeout else _CALL_TIMEOUT
        correlation = new_id()
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def on_reply(envelope: Envelope, offset: str, epoch: str) -> None:
            if answered.done():
                return
            if _ANSWER in envelope.payload:
                answered.set_result(envelope.payload[_ANSWER])
            else:
                answered.set_exception(socketio.exceptions.TimeoutError())

        reply = Target("reply", correlation)
        await self.bus.subscribe(reply, on_reply)  # before asking, so no answer can be missed
        try:
            payload = {"data": self._data(data), "timeout": wait, "reply": correlation}
            receipt = await self.bus.send(self._envelope(event, payload), durable=False)
            if not receipt.delivered:  # no process holds the socket: nobody can answer
                raise socketio.exceptions.TimeoutError()
            try:
                return await asyncio.wait_for(answered, wait + 1.0)
            except TimeoutError:
                raise socketio.exceptions.TimeoutError() from None
        finally:
            await self.bus.unsubscribe(reply)


# -- the holder's side ------------------------------------------------------------------------------

#: The bridge of this process, while its app's lifespan runs.
_active: ChainlitBus | None = None
_patched = False


class ChainlitBus:
    """One process's bridge: its bus, and the Chainlit sessions whose sockets are here."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.bus = Bus(self.settings)
        #: Session id -> socket id, for the sessions held (subscribed) here.
        self.held: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ChainlitBus:
        global _active
        await self.bus.__aenter__()
        await self.bus.registry.beat()
        self._heartbeat = asyncio.create_task(self._beat(), name="switchboard-chainlit-heartbeat")
        _active = self
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _active
        if _active is self:
            _active = None
        tasks = [*self._tasks, *([self._heartbeat] if self._heartbeat else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The sessions still held stay addressable for their grace period (they may resume elsewhere).
        with contextlib.suppress(BusUnavailable):
            for session_id in list(self.held):
                await self.bus.registry.detach(session_id, b"", "0-0")
            await self.bus.registry.leave()
        await self.bus.__aexit__(exc_type, exc, tb)

    def remote(self, session_id: str) -> RemoteSession:
        return RemoteSession(session_id, self.bus)

    async def hold(self, session: WebsocketSession) -> None:
        """The session's socket is here now: record it in the registry and subscribe its channel."""
        if not valid_session_id(session.id):
            log.warning("Chainlit session id %r is not addressable on the bus; kept local", session.id)
            return
        user = _user_record(session.user)
        record = await self.bus.registry.get(session.id)
        if record is not None and record.replica != self.settings.replica_id:
            theirs = (record.user or {}).get("identifier")
            if theirs != (user or {}).get("identifier"):
                # Chainlit's own rule for restoring a session (same user or none), across replicas.
                await session.delete()  # type: ignore[no-untyped-call]
                raise ConnectionRefusedError("authorization failed")
        await self.bus.registry.create(
            session.id, user=user, thread_id=session.thread_id, resume_token=secrets.token_urlsafe(16)
        )
        await self.bus.subscribe(Target.session(session.id), self._deliver)
        self.held[session.id] = session.socket_id

    async def release(self, session: WebsocketSession, socket_id: str) -> None:
        """The session's socket `socket_id` is gone: unsubscribe, and mark the record disconnected."""
        if self.held.get(session.id) != socket_id:
            return  # restored onto another socket meanwhile, or never held
        del self.held[session.id]
        await self.bus.unsubscribe(Target.session(session.id))
        await self.bus.registry.detach(session.id, b"", "0-0")  # a no-op if another replica holds it

    async def _beat(self) -> None:
        """The replica's heartbeat (one write, whatever the sessions); after Redis lost data, the
        records of the sessions held here are registered again; dead replicas are swept."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                if await self.bus.registry.beat():
                    await self.bus.registry.restore([self._held(i) for i in self.held])
                await self.bus.registry.sweep()
            except BusUnavailable as exc:
                log.warning("heartbeat of the Chainlit bridge failed: %s", exc)

    def _held(self, session_id: str) -> Held:
        session = cl_session.ws_sessions_id.get(session_id)
        user = _user_record(session.user) if session is not None else None
        thread_id = session.thread_id if session is not None else None
        return Held(session_id, user, thread_id, token_hash(secrets.token_urlsafe(16)), b"", "0-0")

    async def _deliver(self, envelope: Envelope, offset: str, epoch: str) -> None:
        session = cl_session.ws_sessions_id.get(envelope.target.id)
        if session is None or isinstance(session, RemoteSession):
            return  # its socket left this process (Chainlit would drop the emit too)
        payload = envelope.payload
        reply = payload.get("reply")
        if isinstance(reply, str):
            self._spawn(self._call(session, envelope.event, payload, reply))
        else:
            await _awaited(session.emit(envelope.event, payload.get("data")))

    async def _call(self, session: WebsocketSession, event: str, payload: dict[str, Any], reply: str) -> None:
        timeout = payload.get("timeout")
        call: Callable[..., Awaitable[Any]] = session.emit_call  # Chainlit's `sio.call` closure
        try:
            answer: dict[str, Any] = {
                _ANSWER: await call(
                    event, payload.get("data"), timeout if isinstance(timeout, int | float) else None
                )
            }
        except socketio.exceptions.TimeoutError:
            answer = {"timeout": True}
        envelope = Envelope(Target("reply", reply), _ANSWER, answer, self.settings.replica_id)
        await self.bus.publish(envelope)  # nobody listening: the asker gave up already

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("relaying an ask failed", exc_info=task.exception())


def _replaced(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {key: _replaced(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_replaced(item, old, new) for item in value]
    return new if value == old else value


async def _awaited(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


def _user_record(user: object) -> dict[str, Any] | None:
    identifier = getattr(user, "identifier", None)
    if not isinstance(identifier, str):
        return None
    display_name = getattr(user, "display_name", None)
    return {"identifier": identifier, "display_name": display_name if isinstance(display_name, str) else None}


# -- the patches (applied by enable_chainlit_bus only) -------------------------------------------


def _get_by_id(cls: type[WebsocketSession], session_id: str) -> WebsocketSession | None:
    local: WebsocketSession | None = cl_session.ws_sessions_id.get(session_id)
    if local is not None or _active is None or not isinstance(session_id, str):
        return local
    caller = str(sys._getframe(1).f_globals.get("__name__", ""))
    if caller == "chainlit" or caller.startswith("chainlit."):
        return None  # Chainlit's own lookups (restore on connect, its HTTP routes) stay local
    return _active.remote(session_id)


Handler = Callable[..., Awaitable[Any]]


def _wrap_connect(original: Handler) -> Handler:
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> Any:
        result = await original(sid, environ, auth)
        session = cl_session.ws_sessions_sid.get(sid)
        if result is not False and session is not None and _active is not None:
            await _active.hold(session)  # before the client hears it is connected
        return result

    return connect


def _wrap_disconnect(original: Handler) -> Handler:
    takes_reason = len(inspect.signature(original).parameters) > 1

    async def disconnect(sid: str, reason: Any = None) -> Any:
        session = cl_session.ws_sessions_sid.get(sid)
        try:
            return await (original(sid, reason) if takes_reason else original(sid))
        finally:
            if session is not None and _active is not None:
                await _active.release(session, sid)

    return disconnect


def _apply_patches() -> None:
    """The three rows of PATCHES, once per process."""
    global _patched
    if _patched:
        return
    import chainlit.server as cl_server

    WebsocketSession.get_by_id = classmethod(_get_by_id)  # type: ignore[method-assign,assignment]
    handlers = cl_server.sio.handlers["/"]
    handlers["connect"] = _wrap_connect(handlers["connect"])
    handlers["disconnect"] = _wrap_disconnect(handlers["disconnect"])
    _patched = True


# -- adoption ---------------------------------------------------------------------------------------


def enable_chainlit_bus(app: FastAPI, *, settings: Settings | None = None) -> ChainlitBus:
    """Put the Chainlit app mounted on `app` on the Switchboard bus (call it after mount_chainlit).

    Checks Chainlit's internals (ChainlitIncompatible otherwise), applies the patches, answers
    SessionNotFound with 404 JSON, and runs the bus for the lifetime of `app` (its lifespan).
    """
    from web.http import add_session_error_handlers

    check_chainlit()
    _apply_patches()
    bridge = ChainlitBus(settings)
    add_session_error_handlers(app)
    parent_lifespan = app.router.lifespan_context

    # Starlette never runs the lifespan of a mounted app, so the bridge rides on the parent's.
    @contextlib.asynccontextmanager
    async def lifespan(parent: Any) -> AsyncIterator[Any]:
        async with bridge, parent_lifespan(parent) as state:
            yield state

    app.router.lifespan_context = lifespan
    return bridge


def mount_chainlit(
    app: FastAPI, target: str, path: str = "/chainlit", *, settings: Settings | None = None
) -> ChainlitBus:
    """Chainlit's `mount_chainlit(app, target, path)`, with the bridge enabled."""
    from chainlit.utils import mount_chainlit as chainlit_mount

    chainlit_mount(app, target, path)
    return enable_chainlit_bus(app, settings=settings)


@contextlib.asynccontextmanager
async def session_context(session_id: str, *, settings: Settings | None = None) -> AsyncIterator[Any]:
    """Chainlit's websocket context of `session_id`, from any process (SessionNotFound if unknown).

    In a process running the bridge, its bus (and the local session, if held here); elsewhere a bus
    connection for the duration. The context is Chainlit's own: `cl.Message(...).send()` works in it.
    """
    check_chainlit(server=False)
    local = cl_session.ws_sessions_id.get(session_id)
    if local is not None and not isinstance(local, RemoteSession):
        yield cl_context.init_ws_context(local)
    elif _active is not None and settings is None:
        yield cl_context.init_ws_context(await _active.remote(session_id).resolve())
    else:
        async with Bus(settings) as bus:
            yield cl_context.init_ws_context(await RemoteSession(session_id, bus).resolve())
