"""Every event name of the client protocol, in one table (docs/protocol.md describes each one).

To add a client event, add a row here; the runtime reads whether it is logged and kept in history from
this table, and every name in it is refused as a custom event from a worker or a webhook.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Sender = Literal["bus", "replica", "client", "socketio", "internal"]


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    #: Who emits it: `bus` (sent to a session through its channel, from any process), `replica`
    #: (emitted by the replica holding the socket), `client` (client to server), `socketio`
    #: (reserved by Socket.IO itself), `internal` (travels between processes only).
    sender: Sender
    #: Appended to the session log, so a resume replays it (durable, with an `offset`).
    logged: bool = False
    #: Kept in the thread history (data persistence); replaying these rebuilds the conversation.
    history: bool = False
    #: Sends of it that follow closely travel joined (SWITCHBOARD_STREAM_COALESCE_SECONDS).
    coalesced: bool = False


EVENTS: dict[str, Event] = {
    e.name: e
    for e in (
        # Sent through the bus to one session, from the replica holding it or from anywhere else.
        Event("new_message", "bus", logged=True, history=True),
        Event("update_message", "bus", logged=True, history=True),
        Event("delete_message", "bus", logged=True, history=True),
        Event("stream_start", "bus", logged=True),
        # Token bursts and activity markers are not logged; the end of a stream is a durable update.
        Event("stream_token", "bus", coalesced=True),
        Event("task_start", "bus"),
        Event("task_end", "bus"),
        # A question is kept in the session's open questions instead of its log (re-asked on resume).
        Event("ask", "bus"),
        Event("ask_timeout", "bus"),
        Event("clear_ask", "bus"),
        # Emitted by the replica holding the socket.
        Event("session", "replica"),
        Event("session_replaced", "replica"),
        # The replica is shutting down: reconnect after `reconnectAfterMs` (web/drain.py).
        Event("draining", "replica"),
        Event("replay_truncated", "replica"),
        Event("replayed", "replica"),
        Event("log_reset", "replica"),
        Event("thread_history", "replica"),
        # Refusals of client events: a flood (`rate_limited`), or a message too large or too many.
        Event("rate_limited", "replica"),
        Event("message_refused", "replica"),
        # From the client.
        Event("connection_successful", "client"),
        Event("client_message", "client"),
        Event("ack", "client"),
        # Socket.IO's own.
        Event("connect", "socketio"),
        Event("connect_error", "socketio"),
        Event("disconnect", "socketio"),
        Event("disconnecting", "socketio"),
        Event("newListener", "socketio"),
        Event("removeListener", "socketio"),
        # Between processes only: an answer on a question's reply channel.
        Event("answer", "internal"),
    )
}

#: Socket.IO's own names: a client event with one of these names is dropped before any handler.
SOCKETIO_EVENTS = frozenset(name for name, e in EVENTS.items() if e.sender == "socketio")

ASK = "ask"
ANSWER = "answer"
DRAINING = "draining"

#: Envelope events starting with this are for replicas, never forwarded to a client.
CONTROL_PREFIX = "switchboard:"
TAKEOVER = CONTROL_PREFIX + "takeover"

_CUSTOM_EVENT = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


def logged(event: str) -> bool:
    """Whether a send of `event` to a session is durable; custom events are."""
    spec = EVENTS.get(event)
    return spec.logged if spec is not None else True


def kept_in_history(event: str) -> bool:
    spec = EVENTS.get(event)
    return spec is not None and spec.history


def coalesced(event: str) -> bool:
    spec = EVENTS.get(event)
    return spec is not None and spec.coalesced


def join_tokens(held: dict[str, Any], token: dict[str, Any]) -> dict[str, Any] | None:
    """Two `stream_token` payloads of one message as one: the tokens joined (a sequence token
    replaces what came before it); None for tokens of different messages."""
    if held.get("id") != token.get("id") or held.get("isInput") != token.get("isInput"):
        return None
    if token.get("isSequence"):
        return token
    return {**held, "token": str(held.get("token", "")) + str(token.get("token", ""))}


def check_custom_event(event: str) -> None:
    """Raise ValueError unless `event` may be sent as a custom client event (worker, webhook)."""
    if not _CUSTOM_EVENT.fullmatch(event) or event in EVENTS:
        raise ValueError(
            f"custom event {event!r} must match [a-z][a-z0-9_.-]{{0,63}} and not be a protocol event "
            "(docs/protocol.md lists them)"
        )
