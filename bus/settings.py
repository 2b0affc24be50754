"""Configuration: every setting comes from a `SWITCHBOARD_` environment variable, read once per process."""

from __future__ import annotations

import functools
import math
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

_PREFIX = "SWITCHBOARD_"
_REPLICA_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def _generated_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Process-wide settings; see docs/configuration.md for each variable."""

    #: `redis://` or `rediss://` URL of the bus; None selects the in-process `memory://` bus.
    redis_url: str | None = None
    #: Names this process on the bus and in the session registry.
    replica_id: str = field(default_factory=_generated_replica_id)
    #: How long a disconnected session stays resumable (and addressable) before it expires.
    session_grace_seconds: float = 300.0
    #: Every Redis command answers within this many seconds, or the caller gets BusUnavailable.
    redis_timeout_seconds: float = 5.0
    #: Redis command connections per process; more concurrent commands wait (within the timeout).
    redis_max_connections: int = 64
    #: Largest encoded envelope accepted on publish and on receipt.
    max_envelope_bytes: int = 1024 * 1024
    #: Prefix of every Redis key and channel this project uses.
    key_prefix: str = "switchboard"
    #: Messages kept per session log for replay (count, bytes and age limits, whichever binds first).
    session_log_length: int = 1000
    session_log_seconds: float = 900.0
    #: Log entries read per round trip when replaying (never an unbounded XRANGE).
    replay_batch: int = 100
    #: Store every message of a thread (bounded) so a resumed thread gets its history.
    data_persistence: bool = False
    #: Messages kept per thread history when data persistence is on.
    thread_history_length: int = 500
    #: Bytes kept per session log and per thread history (the oldest entries go first).
    session_log_bytes: int = 4 * 1024 * 1024
    thread_history_bytes: int = 4 * 1024 * 1024
    #: A thread's history and owner expire this long after its last message.
    thread_ttl_seconds: float = 30 * 24 * 3600.0

    #: Abuse limits, per replica (docs/security.md); 0 turns a limit off.
    handshakes_per_minute: int = 120
    user_handshakes_per_minute: int = 60
    sessions_per_user: int = 20
    events_per_second: float = 10.0
    event_burst: int = 30
    #: Largest `client_message` text (and ask answer), in bytes.
    max_message_bytes: int = 64 * 1024
    #: Hook calls (messages) of one session waiting to run; more are refused.
    hook_queue: int = 16
    #: HS256 secret that signs and verifies tokens; None leaves authentication off.
    auth_secret: str | None = field(default=None, repr=False)
    #: Former secrets that still verify (never sign), for rotation.
    auth_previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    #: Whether chat sockets must present a valid token; defaults to on when a secret is set.
    require_login: bool | None = None
    #: Lifetime of tokens minted by create_jwt.
    token_ttl_seconds: float = 15 * 24 * 3600.0
    #: `aud` and `iss` claims to put in tokens and to require from them, when set.
    token_audience: str | None = None
    token_issuer: str | None = None

    #: Standard Webhooks signing secrets (`whsec_...`); several verify, for rotation.
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    #: How far a webhook timestamp may be from now, either way; ids are kept this long x2 for replays.
    webhook_tolerance_seconds: int = 300
    #: Largest webhook request body.
    webhook_max_bytes: int = 64 * 1024
    #: Webhook requests per caller per minute; 0 turns the limit off.
    webhook_rate_limit: int = 0

    @property
    def login_required(self) -> bool:
        return self.auth_secret is not None if self.require_login is None else self.require_login

    @property
    def bus_url(self) -> str:
        return self.redis_url or "memory://"

    @property
    def heartbeat_seconds(self) -> float:
        """Interval of a replica's heartbeat (one write per replica, whatever its sessions)."""
        return min(5.0, self.session_grace_seconds / 3)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(_PREFIX + name, "").strip()
            return value or None

        values: dict[str, object] = {"redis_url": get("REDIS_URL")}
        if (replica_id := get("REPLICA_ID")) is not None:
            if not _REPLICA_ID.fullmatch(replica_id):
                raise ValueError(f"{_PREFIX}REPLICA_ID must be 1-128 of [A-Za-z0-9_.:-], got {replica_id!r}")
            values["replica_id"] = replica_id
        if (grace := get("SESSION_GRACE_SECONDS")) is not None:
            values["session_grace_seconds"] = _positive(float, "SESSION_GRACE_SECONDS", grace)
        if (size := get("MAX_ENVELOPE_BYTES")) is not None:
            values["max_envelope_bytes"] = _positive(int, "MAX_ENVELOPE_BYTES", size)
        if (prefix := get("KEY_PREFIX")) is not None:
            values["key_prefix"] = prefix
        for name, kind in [
            ("SESSION_LOG_LENGTH", int),
            ("REPLAY_BATCH", int),
            ("THREAD_HISTORY_LENGTH", int),
            ("SESSION_LOG_BYTES", int),
            ("SESSION_LOG_SECONDS", float),
            ("REDIS_TIMEOUT_SECONDS", float),
            ("REDIS_MAX_CONNECTIONS", int),
            ("THREAD_HISTORY_BYTES", int),
            ("THREAD_TTL_SECONDS", float),
            ("EVENT_BURST", int),
            ("MAX_MESSAGE_BYTES", int),
            ("HOOK_QUEUE", int),
        ]:
            if (raw := get(name)) is not None:
                values[name.lower()] = _positive(kind, name, raw)
        secrets_ = get("WEBHOOK_SECRETS") or ""
        # Their form (`whsec_` + base64) is checked by web.signatures when the webhook router is built.
        values["webhook_secrets"] = tuple(secrets_.replace(",", " ").split())
        for name in ("WEBHOOK_TOLERANCE_SECONDS", "WEBHOOK_MAX_BYTES"):
            if (raw := get(name)) is not None:
                values[name.lower()] = _positive(int, name, raw)
        for name, kind in [
            ("WEBHOOK_RATE_LIMIT", int),
            ("HANDSHAKES_PER_MINUTE", int),
            ("USER_HANDSHAKES_PER_MINUTE", int),
            ("SESSIONS_PER_USER", int),
            ("EVENTS_PER_SECOND", float),
        ]:
            if (raw := get(name)) is not None:  # 0 turns these limits off
                values[name.lower()] = 0 if raw == "0" else _positive(kind, name, raw)
        if (persist := get("DATA_PERSISTENCE")) is not None:
            values["data_persistence"] = _boolean("DATA_PERSISTENCE", persist)
        values["auth_secret"] = get("AUTH_SECRET")
        previous = get("AUTH_PREVIOUS_SECRETS") or ""
        values["auth_previous_secrets"] = tuple(p.strip() for p in previous.split(",") if p.strip())
        if (required := get("REQUIRE_LOGIN")) is not None:
            values["require_login"] = _boolean("REQUIRE_LOGIN", required)
        if (ttl := get("TOKEN_TTL_SECONDS")) is not None:
            values["token_ttl_seconds"] = _positive(float, "TOKEN_TTL_SECONDS", ttl)
        values["token_audience"] = get("TOKEN_AUDIENCE")
        values["token_issuer"] = get("TOKEN_ISSUER")
        return cls(**values)  # type: ignore[arg-type]


def _boolean(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{_PREFIX}{name} must be true or false, got {raw!r}")


def _positive(kind: type[float] | type[int], name: str, raw: str) -> float | int:
    try:
        value = kind(raw)
    except ValueError:
        article = "an" if kind is int else "a"
        raise ValueError(f"{_PREFIX}{name} must be {article} {kind.__name__}, got {raw!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{_PREFIX}{name} must be a positive finite number, got {raw!r}")
    return value


@functools.cache
def get_settings() -> Settings:
    """The settings of this process, read from the environment on first use."""
    return Settings.from_env()
