"""Event names of the client protocol that the runtime treats specially (docs/protocol.md)."""

import re

#: Not appended to the session log: token bursts and activity markers. The end state of a stream
#: is always durable, because `Message.send()` after streaming emits `update_message`.
EPHEMERAL_EVENTS = frozenset({"stream_token", "task_start", "task_end", "ask_timeout", "clear_ask"})

#: Envelope events starting with this are for replicas, never forwarded to a client.
CONTROL_PREFIX = "switchboard:"
TAKEOVER = CONTROL_PREFIX + "takeover"

#: A question for the user; kept in the session's open questions instead of its log (re-asked on resume).
ASK = "ask"

#: Events that are published without being appended to the session log.
UNLOGGED_EVENTS = EPHEMERAL_EVENTS | {ASK}

#: Events with a meaning in the protocol: a webhook or worker cannot send them as custom events.
RESERVED_EVENTS = frozenset(
    {
        "session",
        "session_replaced",
        "replay_truncated",
        "replayed",
        "thread_history",
        "stream_start",
        "stream_token",
        "update_message",
        "delete_message",
        "task_start",
        "task_end",
        "ask",
        "ask_timeout",
        "clear_ask",
        "connect",
        "disconnect",
        "connect_error",
    }
)
_CUSTOM_EVENT = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


def check_custom_event(event: str) -> None:
    """Raise ValueError unless `event` may be sent as a custom client event."""
    if not _CUSTOM_EVENT.fullmatch(event) or event in RESERVED_EVENTS:
        raise ValueError(
            f"custom event {event!r} must match [a-z][a-z0-9_.-]{{0,63}} and not be a protocol event"
        )
