"""Configuration: every setting comes from a `SWITCHBOARD_` environment variable, read once per process."""

from __future__ import annotations

import functools
import math
import os
import re
import secrets
import socket
import urllib.parse
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
    #: Events queued for one socket, at most; a socket with more (its client stopped reading) is
    #: closed (`slow_consumer`) and catches up from its log when it resumes.
    max_queued_events: int = 2000
    #: Consecutive `stream_token` events of one message sent within this window travel as one
    #: envelope (0: each alone).
    stream_coalesce_seconds: float = 0.01
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
    #: JWKS document of an identity provider whose tokens are accepted beside our own HS256 ones.
    auth_jwks_url: str | None = None
    #: `iss` that identity-provider tokens must carry (required with a JWKS URL).
    auth_jwks_issuer: str | None = None
    #: `aud` values of which identity-provider tokens must carry one (required with a JWKS URL).
    auth_jwks_audience: tuple[str, ...] = ()
    #: Signature algorithms accepted from the identity provider (asymmetric ones only).
    auth_jwks_algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    #: At most one JWKS fetch per this many seconds, whatever tokens arrive (unknown `kid`s included).
    auth_jwks_refresh_seconds: float = 60.0
    #: Fetched keys are fetched again, on use, after this many seconds (kept if that fetch fails).
    auth_jwks_cache_seconds: float = 600.0
    #: Time limit of one JWKS fetch.
    auth_jwks_timeout_seconds: float = 5.0
    #: Whether the login endpoints' `access_token` cookie is `Secure` (HTTPS only).
    cookie_secure: bool = True
    #: Origins besides the app's own allowed on the chat socket and the login endpoints (CORS).
    allowed_origins: tuple[str, ...] = ()

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
        if self.require_login is not None:
            return self.require_login
        return self.auth_secret is not None or self.auth_jwks_url is not None

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
            ("MAX_QUEUED_EVENTS", int),
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
            ("STREAM_COALESCE_SECONDS", float),
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
        values.update(_jwks_values(get))
        if (secure := get("COOKIE_SECURE")) is not None:
            values["cookie_secure"] = _boolean("COOKIE_SECURE", secure)
        values["allowed_origins"] = _origins(get("ALLOWED_ORIGINS") or "")
        values.update(_operations(get))
        return cls(**values)  # type: ignore[arg-type]


#: Asymmetric JWS algorithms an identity provider may use; HMAC and `none` are never accepted from one.
JWKS_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")


def _jwks_values(get: Callable[[str], str | None]) -> dict[str, object]:
    values: dict[str, object] = {}
    for name in ("AUTH_JWKS_REFRESH_SECONDS", "AUTH_JWKS_CACHE_SECONDS", "AUTH_JWKS_TIMEOUT_SECONDS"):
        if (raw := get(name)) is not None:
            values[name.lower()] = _positive(float, name, raw)
    if (algorithms := get("AUTH_JWKS_ALGORITHMS")) is not None:
        chosen = tuple(dict.fromkeys(algorithms.replace(",", " ").split()))
        if refused := [a for a in chosen if a not in JWKS_ALGORITHMS]:
            raise ValueError(
                f"{_PREFIX}AUTH_JWKS_ALGORITHMS accepts only {' '.join(sorted(JWKS_ALGORITHMS))} "
                f"(never HS* or none for identity-provider tokens), got {' '.join(refused)!r}"
            )
        values["auth_jwks_algorithms"] = chosen
    refresh = float(values.get("auth_jwks_refresh_seconds", 60.0))  # type: ignore[arg-type]
    cache = float(values.get("auth_jwks_cache_seconds", 600.0))  # type: ignore[arg-type]
    if cache < refresh:
        raise ValueError(
            f"{_PREFIX}AUTH_JWKS_CACHE_SECONDS ({cache:g}) must not be below "
            f"{_PREFIX}AUTH_JWKS_REFRESH_SECONDS ({refresh:g})"
        )
    url = get("AUTH_JWKS_URL")
    issuer, audience = get("AUTH_JWKS_ISSUER"), get("AUTH_JWKS_AUDIENCE")
    if url is None:
        for name, value in (("AUTH_JWKS_ISSUER", issuer), ("AUTH_JWKS_AUDIENCE", audience)):
            if value is not None:
                raise ValueError(f"{_PREFIX}{name} is set but {_PREFIX}AUTH_JWKS_URL is not")
        return values
    parsed = urllib.parse.urlsplit(url)
    if (
        not (
            parsed.scheme == "https"
            or (parsed.scheme == "http" and (parsed.hostname or "") in _LOOPBACK_HOSTS)
        )
        or not parsed.hostname
    ):
        raise ValueError(
            f"{_PREFIX}AUTH_JWKS_URL must be an https:// URL (http:// only on a loopback host), got {url!r}"
        )
    if issuer is None:
        raise ValueError(f"{_PREFIX}AUTH_JWKS_ISSUER is required with {_PREFIX}AUTH_JWKS_URL")
    if audience is None:
        raise ValueError(f"{_PREFIX}AUTH_JWKS_AUDIENCE is required with {_PREFIX}AUTH_JWKS_URL")
    values["auth_jwks_url"] = url
    values["auth_jwks_issuer"] = issuer
    values["auth_jwks_audience"] = tuple(dict.fromkeys(audience.replace(",", " ").split()))
    return values


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(dict.fromkeys(raw.lower().replace(",", " ").split()))
    for origin in origins:
        if origin == "*":
            raise ValueError(
                f"{_PREFIX}ALLOWED_ORIGINS does not accept '*' (credentials are sent cross-origin): "
                "list each origin"
            )
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"{_PREFIX}ALLOWED_ORIGINS entries must be origins like https://app.example.com[:port] "
                f"(scheme and host, no path or trailing slash), got {origin!r}"
            )
    return origins


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
