"""Event names of the client protocol that the runtime treats specially (docs/protocol.md)."""

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
