"""Configuration: every setting comes from a `SWITCHBOARD_` environment variable, read once per process."""

from __future__ import annotations

import functools
import math
import os
import re
import secrets
import socket
from collections.abc import Callable, Mapping
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
    #: Largest encoded envelope accepted on publish and on receipt.
    max_envelope_bytes: int = 1024 * 1024
    #: Prefix of every Redis key and channel this project uses.
    key_prefix: str = "switchboard"
    #: Messages kept per session log for replay (trimmed approximately, `MAXLEN ~`).
    session_log_length: int = 1000
    #: Log entries read per round trip when replaying (never an unbounded XRANGE).
    replay_batch: int = 100
    #: Store every message of a thread (bounded) so a resumed thread gets its history.
    data_persistence: bool = False
    #: Messages kept per thread history when data persistence is on.
    thread_history_length: int = 500
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

    # -- operations (web/health.py, web/drain.py, web/metrics.py, web/logs.py) --
    #: How long a SIGTERM drain spreads the reconnects of this replica's clients over.
    drain_seconds: float = 20.0
    #: How long readiness waits for its probe envelope to come back through the bus.
    ready_timeout_seconds: float = 2.0
    #: Where mount_app serves liveness, readiness and metrics; None: `{path}/healthz`, `{path}/readyz`,
    #: `{path}/metrics`. The metrics path `off` serves no metrics.
    health_path: str | None = None
    ready_path: str | None = None
    metrics_path: str | None = None
    #: `text` (the app's own logging) or `json` (one JSON object per line, secrets redacted).
    log_format: str = "text"

    @property
    def login_required(self) -> bool:
        return self.auth_secret is not None if self.require_login is None else self.require_login

    @property
    def bus_url(self) -> str:
        return self.redis_url or "memory://"

    @property
    def heartbeat_seconds(self) -> float:
        """Interval at which a replica refreshes the registry TTL of the sessions it holds."""
        return min(30.0, self.session_grace_seconds / 3)

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
        ]:
            if (raw := get(name)) is not None:
                values[name.lower()] = _positive(kind, name, raw)
        secrets_ = get("WEBHOOK_SECRETS") or ""
        # Their form (`whsec_` + base64) is checked by web.signatures when the webhook router is built.
        values["webhook_secrets"] = tuple(secrets_.replace(",", " ").split())
        for name in ("WEBHOOK_TOLERANCE_SECONDS", "WEBHOOK_MAX_BYTES"):
            if (raw := get(name)) is not None:
                values[name.lower()] = _positive(int, name, raw)
        if (limit := get("WEBHOOK_RATE_LIMIT")) is not None:
            values["webhook_rate_limit"] = 0 if limit == "0" else _positive(int, "WEBHOOK_RATE_LIMIT", limit)
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
        values.update(_operations(get))
        return cls(**values)  # type: ignore[arg-type]


def _operations(get: Callable[[str], str | None]) -> dict[str, object]:
    """The operations settings: drain, readiness, the paths of the probes and metrics, log format."""
    values: dict[str, object] = {}
    for name in ("DRAIN_SECONDS", "READY_TIMEOUT_SECONDS"):
        if (raw := get(name)) is not None:
            values[name.lower()] = _positive(float, name, raw)
    for name in ("HEALTH_PATH", "READY_PATH", "METRICS_PATH"):
        if (raw := get(name)) is not None:
            if not (raw.startswith("/") or (name == "METRICS_PATH" and raw == "off")):
                raise ValueError(f"{_PREFIX}{name} must start with '/', got {raw!r}")
            values[name.lower()] = raw
    if (log_format := get("LOG_FORMAT")) is not None:
        if log_format.lower() not in ("text", "json"):
            raise ValueError(f"{_PREFIX}LOG_FORMAT must be text or json, got {log_format!r}")
        values["log_format"] = log_format.lower()
    return values


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
