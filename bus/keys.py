"""Every Redis key and channel name, built in one place.

A session's keys and channel carry its id as a `{hash tag}`, so they share one Redis Cluster slot
(the send script touches the record, the log and the channel in one step).
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.envelope import Target


def sharded(channel: str) -> bool:
    """Whether `channel` is a shard channel on Redis Cluster (`SPUBLISH`/`SSUBSCRIBE`): those of a
    session, a user or a reply, which carry a hash tag. The broadcast and replica channels are classic
    (`PUBLISH` reaches every node)."""
    return "{" in channel and ":replica:{" not in channel


def byte_count(list_key: str) -> str:
    """The running byte total of a bounded list (a thread history), in the list's own slot."""
    return f"{list_key}:bytes"


@dataclass(frozen=True, slots=True)
class Keys:
    """Names under one prefix (`SWITCHBOARD_KEY_PREFIX`); see docs/configuration.md for the list."""

    prefix: str

    def channel(self, target: Target) -> str:
        """The pub/sub channel of a session, a user, a reply, or everyone."""
        if target.kind == "broadcast":
            return f"{self.prefix}:broadcast"
        return f"{self.prefix}:{target.kind}:{{{target.id}}}"

    def replica(self, replica_id: str) -> str:
        """A replica's own channel: subscribed first, so the subscription is live before any session."""
        return f"{self.prefix}:replica:{{{replica_id}}}"

    def replicas(self) -> str:
        """Every live replica's last heartbeat (a hash: replica id -> Unix time)."""
        return f"{self.prefix}:replicas"

    def replica_sessions(self, replica_id: str) -> str:
        """The sessions a replica holds (a set), for the sweep after it died."""
        return f"{self.prefix}:replica:{{{replica_id}}}:sessions"

    def sweep(self, replica_id: str) -> str:
        """Claimed by the replica that sweeps a dead one's sessions."""
        return f"{self.prefix}:replica:{{{replica_id}}}:sweep"

    def session(self, session_id: str) -> str:
        """The session's registry record (a hash)."""
        return f"{self.prefix}:session:{{{session_id}}}:info"

    def session_pattern(self) -> str:
        """A SCAN pattern matching every session's registry record (`session(...)`)."""
        return f"{self.prefix}:session:{{*}}:info"

    def session_id_of(self, key: str) -> str | None:
        """The session id in a registry record's key, or None if `key` is not one."""
        head, tail = f"{self.prefix}:session:{{", "}:info"
        if key.startswith(head) and key.endswith(tail):
            return key[len(head) : -len(tail)] or None
        return None

    def session_log(self, session_id: str) -> str:
        """The session's message log (a stream), in the same slot as its record."""
        return f"{self.prefix}:session:{{{session_id}}}:log"

    def session_asks(self, session_id: str) -> str:
        """The session's open questions (correlation id -> ask), re-asked when it resumes."""
        return f"{self.prefix}:session:{{{session_id}}}:asks"

    def thread_owner(self, thread_id: str) -> str:
        return f"{self.prefix}:thread:{{{thread_id}}}:owner"

    def thread_history(self, thread_id: str) -> str:
        return f"{self.prefix}:thread:{{{thread_id}}}:history"

    def webhook_retry(self, scope: str) -> str:
        """The first response to one (caller, retry key), for idempotent webhook retries."""
        return f"{self.prefix}:webhook:{{{scope}}}"

    def jobs(self) -> str:
        """The job queue of the worked taskiq example (workers/taskiq_jobs.py)."""
        return f"{self.prefix}:jobs"

    def webhook_rate(self, caller: str, window: int) -> str:
        return f"{self.prefix}:webhook-rate:{{{caller}}}:{window}"
