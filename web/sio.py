"""python-socketio, fitted to a chat server: forged client events dropped, and an emit to one socket
that queues its packet at once and bounds what a socket may have queued."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

from web.protocol import SOCKETIO_EVENTS

log = logging.getLogger("switchboard.web")


class SocketServer(socketio.AsyncServer):  # type: ignore[misc]
    """Drops client events named like Socket.IO's own: python-socketio would hand a client's
    `connect` or `disconnect` event to the connect and disconnect handlers."""

    async def _handle_event(
        self, eio_sid: str, namespace: str | None, id: int | None, data: list[Any]
    ) -> None:
        if data and data[0] in SOCKETIO_EVENTS:
            log.info("dropped a client event named %r", str(data[0])[:64])
            return
        await super()._handle_event(eio_sid, namespace, id, data)


class SocketManager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's manager sends every packet from a task of its own and waits for them all,
    so each emit costs a task and a turn of the event loop; an emit to one socket without a
    callback here puts its packet on the socket's queue at once (engine.io's writer sends it).

    A socket with more than `max_queued` packets waiting (a client that stopped reading) is given
    up: `slow_consumer(sid)` is called once, to disconnect it; it resumes from its log.
    """

    def __init__(self, max_queued: int, slow_consumer: Callable[[str], None]) -> None:
        super().__init__()
        self._max_queued = max_queued
        self._slow_consumer = slow_consumer
        self._given_up: set[str] = set()

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: str | None = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: str | None = None,
        **kwargs: Any,
    ) -> None:
        sid = to or room
        eio_sid = self.eio_sid_from_sid(sid, namespace) if sid and not callback and not skip_sid else None
        if sid is None or eio_sid is None:
            await super().emit(event, data, namespace, room, skip_sid, callback, to, **kwargs)
            return
        socket = self.server.eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return
        if socket.queue.qsize() >= self._max_queued:
            if sid not in self._given_up:
                self._given_up.add(sid)
                log.warning("socket %s has %d events queued: disconnecting it", sid, socket.queue.qsize())
                self._slow_consumer(sid)
            return
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        pkt = self.server.packet_class(packet.EVENT, namespace=namespace, data=[event, *args])
        encoded = pkt.encode()
        for part in encoded if isinstance(encoded, list) else [encoded]:
            await socket.send(eio_packet.Packet(eio_packet.MESSAGE, part))

    async def drained(self, sid: str, seconds: float) -> None:
        """Wait until the socket of `sid` has written everything queued for it; a socket that does
        not within `seconds` is given up as a slow consumer."""
        eio_sid = self.eio_sid_from_sid(sid, "/")
        socket = self.server.eio.sockets.get(eio_sid) if eio_sid else None
        if socket is None or socket.closed or not socket.queue.qsize():
            return
        try:
            await asyncio.wait_for(socket.queue.join(), seconds)
        except TimeoutError:
            if socket.closed:
                return  # it left while writing (its writer stopped): not a slow consumer
            if sid not in self._given_up:
                self._given_up.add(sid)
                log.warning("socket %s did not drain in %gs: disconnecting it", sid, seconds)
                self._slow_consumer(sid)

    async def disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        self._given_up.discard(sid)
        await super().disconnect(sid, namespace, **kwargs)


async def close_now(server: socketio.AsyncServer, sid: str) -> None:
    """Close the socket of `sid` without waiting for its queue to drain (its client stopped reading):
    what is queued is dropped (it is in the log), and the websocket closes as soon as the write in
    progress, if any, is done, instead of at the next missed ping (45 s later)."""
    eio_sid = server.manager.eio_sid_from_sid(sid, "/")
    socket = server.eio.sockets.get(eio_sid) if eio_sid else None
    if socket is None:
        return
    await socket.close(wait=False, abort=True, reason="slow_consumer")
    # engine.io's abort only marks the socket closed; its writer closes the websocket on None.
    queue = socket.queue
    while not queue.empty():
        queue.get_nowait()
        queue.task_done()
    queue.put_nowait(None)
