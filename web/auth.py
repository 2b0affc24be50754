"""JWT authentication: our HS256 tokens, and an identity provider's (JWKS) beside them, protect custom
endpoints and the chat socket.

`verify_jwt` (sync) checks our own HS256 tokens; `verify_token` (async) checks either kind, choosing by the
token header's `alg`: `HS256` goes to our secrets (by `kid`), an algorithm of
SWITCHBOARD_AUTH_JWKS_ALGORITHMS to the identity provider's keys (by `kid`), anything else is refused.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Any, Literal

import jwt

from bus import Settings
from web import jwks, runtime
from web.user import User

ALGORITHM = "HS256"
#: Clock skew tolerated on `exp`, `nbf` and `iat`.
LEEWAY_SECONDS = 10
#: The scope a service principal (worker, webhook caller) needs to send to anybody's session.
SEND_SCOPE = "sessions:send"
_MIN_SECRET_BYTES = 32
_MAX_TOKEN_CHARS = 8192

Reason = Literal[
    "missing",
    "wrong_scheme",
    "malformed",
    "bad_algorithm",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "missing_claim",
    "not_configured",
    "keys_unavailable",
    "refused",
]

_MESSAGES: dict[str, str] = {
    "missing": "no token was presented",
    "wrong_scheme": "the Authorization header must use the Bearer scheme",
    "malformed": "the token is not a well-formed JWT",
    "bad_algorithm": "the token is not signed with an accepted algorithm",
    "unknown_key": "the token was signed with a key this server does not know",
    "bad_signature": "the token signature is invalid",
    "expired": "the token has expired",
    "not_yet_valid": "the token is not valid yet",
    "wrong_audience": "the token is for another audience",
    "wrong_issuer": "the token is from another issuer",
    "missing_claim": "the token lacks a required claim",
    "not_configured": "authentication is not configured on this server",
    "keys_unavailable": "the identity provider's keys could not be fetched",
    "refused": "the credentials were refused",
}


#: PyJWT's failures, most specific first, and the reason each one is reported as.
_DECODE_FAILURES: tuple[tuple[type[Exception], Reason], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "bad_algorithm"),
)


class AuthError(Exception):
    """A token was refused; `reason` names the failed check in general terms, never the token."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(_MESSAGES[reason])
        self.reason: Reason = reason

    @property
    def message(self) -> str:
        return _MESSAGES[self.reason]


def key_id(secret: str) -> str:
    """A public fingerprint of a secret, carried as `kid` so verification picks the right key."""
    return hashlib.sha256(b"switchboard-kid:" + secret.encode()).hexdigest()[:16]


def _signing_secret(settings: Settings) -> str:
    secret = settings.auth_secret
    if not secret:
        raise RuntimeError("SWITCHBOARD_AUTH_SECRET is not set; create one with `switchboard create-secret`")
    if len(secret.encode()) < _MIN_SECRET_BYTES:
        raise RuntimeError(
            f"SWITCHBOARD_AUTH_SECRET is shorter than {_MIN_SECRET_BYTES} bytes; "
            "create a strong one with `switchboard create-secret`"
        )
    return secret


def create_jwt(
    user: User,
    expires_in: float | None = None,
    *,
    scope: str | None = None,
    settings: Settings | None = None,
) -> str:
    """Sign a token for `user` (or, with `scope`, for a service principal such as a worker)."""
    settings = settings or runtime.settings()
    secret = _signing_secret(settings)
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user.identifier,
        "identifier": user.identifier,
        "display_name": user.display_name,
        "metadata": user.metadata,
        "iat": now,
        "exp": now + int(settings.token_ttl_seconds if expires_in is None else expires_in),
    }
    if scope:
        claims["scope"] = scope
    if settings.token_audience:
        claims["aud"] = settings.token_audience
    if settings.token_issuer:
        claims["iss"] = settings.token_issuer
    return jwt.encode(claims, secret, algorithm=ALGORITHM, headers={"kid": key_id(secret)})


def verify_jwt(token: object, settings: Settings | None = None) -> User:
    """Verify one of our HS256 tokens and return its user; raises AuthError and nothing else.

    Identity-provider tokens need `await verify_token(...)` (their keys may have to be fetched)."""
    settings = settings or runtime.settings()
    if settings.auth_secret is None:
        raise AuthError("not_configured")
    token, header = _header(token)
    if header.get("alg") != ALGORITHM:
        raise AuthError("bad_algorithm")
    return _verify_hs256(token, header, settings)


async def verify_token(token: object, settings: Settings | None = None) -> User:
    """Verify our HS256 token or an identity provider's; raises AuthError and nothing else.

    The header's `alg` picks the path, then its `kid` the key: `HS256` is checked against our secrets
    only, never against a provider's public key (the algorithm-confusion attack), and a provider's token
    only with the one algorithm its key is bound to."""
    settings = settings or runtime.settings()
    if settings.auth_secret is None and settings.auth_jwks_url is None:
        raise AuthError("not_configured")
    token, header = _header(token)
    alg = header.get("alg")
    if alg == ALGORITHM and settings.auth_secret is not None:
        return _verify_hs256(token, header, settings)
    if settings.auth_jwks_url is None or alg not in settings.auth_jwks_algorithms:
        raise AuthError("bad_algorithm")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthError("unknown_key")
    keys = jwks.keys_for(settings)
    key = await keys.get(kid)
    if key is None:
        raise AuthError("unknown_key" if keys.available else "keys_unavailable")
    if key.algorithm_name != alg:
        raise AuthError("bad_algorithm")  # each published key verifies with one algorithm only
    claims = _decode(
        token,
        key,
        [alg],
        audience=list(settings.auth_jwks_audience),
        issuer=settings.auth_jwks_issuer,
        require=["exp", "sub"],
    )
    return _user_from(claims)


def _header(token: object) -> tuple[str, dict[str, Any]]:
    """The token and its (unverified) header, if it has the shape of a JWT."""
    if not isinstance(token, str) or not token:
        raise AuthError("missing")
    if len(token) > _MAX_TOKEN_CHARS or token.count(".") != 2 or not token.isascii():
        raise AuthError("malformed")
    try:
        return token, jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError("malformed") from None


def _verify_hs256(token: str, header: Mapping[str, Any], settings: Settings) -> User:
    assert settings.auth_secret is not None
    keys = {key_id(s): s for s in (settings.auth_secret, *settings.auth_previous_secrets)}
    kid = header.get("kid")
    secret = keys.get(kid) if isinstance(kid, str) else None
    if secret is None:
        raise AuthError("unknown_key")
    claims = _decode(
        token,
        secret,
        [ALGORITHM],
        audience=settings.token_audience,
        issuer=settings.token_issuer,
        require=["exp", "iat", "sub"],
    )
    return _user_from(claims)


def _decode(
    token: str,
    key: str | jwt.PyJWK,
    algorithms: list[str],
    *,
    audience: str | list[str] | None,
    issuer: str | None,
    require: list[str],
) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=audience or None,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": require, "verify_aud": bool(audience)},
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        reasons = (reason for kind, reason in _DECODE_FAILURES if isinstance(exc, kind))
        raise AuthError(next(reasons, "malformed")) from None
    return claims


def _user_from(claims: Mapping[str, Any]) -> User:
    subject, metadata, name, scope = (
        claims.get("sub"),
        claims.get("metadata"),
        claims.get("display_name", claims.get("name")),
        claims.get("scope", ""),
    )
    if not isinstance(subject, str) or not subject:
        raise AuthError("missing_claim")
    if (
        not isinstance(metadata, dict | None)
        or not isinstance(name, str | None)
        or not isinstance(scope, str)
    ):
        raise AuthError("malformed")
    return User(subject, name, metadata or {}, scopes=tuple(scope.split()))


def token_from_header(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header value; AuthError otherwise."""
    if not authorization:
        raise AuthError("missing")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("wrong_scheme")
    if not token.strip():
        raise AuthError("missing")
    return token.strip()


def handshake_token(environ: Mapping[str, Any], auth: Mapping[str, Any]) -> object:
    """The token a socket handshake presents: `auth.token` (bare or `Bearer ...`), else the
    `access_token` cookie."""
    token = auth.get("token")
    if not token:
        cookies = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        return cookies["access_token"].value if "access_token" in cookies else None
    if isinstance(token, str) and token.lower().startswith("bearer "):
        return token[7:].strip()
    return token


def new_secret() -> str:
    """A fresh signing secret: 64 random bytes, URL-safe text."""
    return secrets.token_urlsafe(64)
