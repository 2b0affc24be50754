"""Webhook endpoints: signed HTTP requests (Standard Webhooks v1) or service tokens send to a
session, a user, or everyone. Retries are idempotent; every bad input gets a precise 4xx."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from typing import Any, Literal

import msgpack
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, field_validator

from bus import (
    Bus,
    BusUnavailable,
    Envelope,
    EnvelopeError,
    Receipt,
    SessionNotFound,
    Settings,
    Target,
    valid_session_id,
)
from web import runtime
from web.auth import SEND_SCOPE, AuthError, token_from_header, verify_jwt
from web.errors import ContextError
from web.message import client_event
from web.protocol import check_custom_event
from web.signatures import SignatureError, secret_keys, sign, verify

__all__ = ["WebhookMessage", "sign", "webhook_router"]

_WEBHOOK_ID = re.compile(r"[\x21-\x7e]{1,256}")
_MAX_IDENTIFIER = 256


class WebhookMessage(BaseModel):
    """What a webhook sends: a chat message, or a custom client event when `event` is set."""

    model_config = {"extra": "forbid"}

    content: str = Field(max_length=32_768, description="The message text.")
    author: str = Field("Assistant", min_length=1, max_length=128)
    event: str | None = Field(
        None,
        description="A custom client event name (`[a-z][a-z0-9_.-]{0,63}`, not a protocol event); "
        "omitted: a `new_message`.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("event")
    @classmethod
    def _custom_event(cls, value: str | None) -> str | None:
        if value is not None:
            check_custom_event(value)
        return value

    @field_validator("metadata")
    @classmethod
    def _bus_safe(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_metadata(value, depth=0)
        return value


_MAX_METADATA_DEPTH = 8


def _check_metadata(value: Any, depth: int) -> None:
    """Metadata must survive the bus and JSON: shallow, integers within 64 bits, finite numbers."""
    if depth > _MAX_METADATA_DEPTH:
        raise ValueError(f"metadata nests deeper than {_MAX_METADATA_DEPTH} levels")
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("metadata numbers must be finite (no NaN or Infinity)")
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise ValueError("metadata integers must fit in 64 bits")
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        _check_metadata(item, depth + 1)


class WebhookTarget(BaseModel):
    kind: Literal["session", "user", "broadcast"]
    id: str


class WebhookReceipt(BaseModel):
    """What the send did. `queued`: the session has no socket now, its log keeps the message."""

    id: str = Field(description="The message id (a UUIDv7).")
    target: WebhookTarget
    offset: str = Field(description="The session log offset; empty for user and broadcast sends.")
    delivered: int = Field(description="How many replicas delivered it live.")
    status: Literal["delivered", "queued", "dropped"]


class WebhookError(BaseModel):
    error: str = Field(description="A stable code, e.g. `bad_signature`.")
    message: str


class _Refused(Exception):
    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers


_EXAMPLE = {"content": "Your report is ready", "author": "reports"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": WebhookError, "description": description}
    for status, description in {
        400: "Malformed headers or body (not JSON, bad webhook-* header, bad signature list).",
        401: "Missing or bad signature or token; timestamp outside the tolerance.",
        403: f"The token lacks the `{SEND_SCOPE}` scope.",
        404: "Unknown session, or a user with no live sessions.",
        409: "The webhook id was used with a different body, or is still being processed.",
        413: "The body is larger than SWITCHBOARD_WEBHOOK_MAX_BYTES, or the message than the bus allows.",
        415: "The body is not `application/json`.",
        422: "The JSON body does not match the message schema.",
        429: "The caller's rate limit (SWITCHBOARD_WEBHOOK_RATE_LIMIT per minute) is used up.",
        503: "The bus is unreachable; retry later.",
    }.items()
}
_HEADERS = {
    "webhook-id": "Standard Webhooks message id (1-256 visible ASCII); retries reuse it.",
    "webhook-timestamp": "Unix seconds; within SWITCHBOARD_WEBHOOK_TOLERANCE_SECONDS of now.",
    "webhook-signature": "Space-separated `v1,<base64 HMAC-SHA256 of id.timestamp.body>` entries.",
    "idempotency-key": "For bearer-token callers: a retry key with the same meaning as webhook-id.",
}
_OPENAPI: dict[str, Any] = {
    "parameters": [
        {"name": name, "in": "header", "required": False, "description": text, "schema": {"type": "string"}}
        for name, text in _HEADERS.items()
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": WebhookMessage.model_json_schema(), "example": _EXAMPLE}},
    },
}


def webhook_router(prefix: str = "/hooks", settings: Settings | None = None) -> APIRouter:
    """An APIRouter with the three webhook endpoints; `app.include_router(webhook_router())`.

    Checks the form of SWITCHBOARD_WEBHOOK_SECRETS now (ValueError), so a bad one stops the start.
    Requests use the settings of the running chat server (pass the same `settings` as to mount_app).
    """
    secret_keys((settings or runtime.settings()).webhook_secrets)
    router = APIRouter(prefix=prefix, tags=["webhooks"])
    common: dict[str, Any] = {
        "status_code": 202,
        "response_model": WebhookReceipt,
        "responses": _ERRORS,
        "openapi_extra": _OPENAPI,
    }

    @router.post("/sessions/{session_id}/messages", summary="Send to one session", **common)
    async def to_session(
        session_id: str,
        request: Request,
    ) -> JSONResponse:
        """Durable: kept in the session's log if it has no socket right now (status `queued`)."""
        return await _handle(request, Target.session(session_id))

    @router.post("/users/{identifier}/messages", summary="Send to every live session of one user", **common)
    async def to_user(
        identifier: str,
        request: Request,
    ) -> JSONResponse:
        """Live only: reaches the user's sessions that have a socket now, on every replica."""
        return await _handle(request, Target("user", identifier))

    @router.post("/broadcast", summary="Send to every live session", **common)
    async def broadcast(
        request: Request,
    ) -> JSONResponse:
        """Live only: reaches every session that has a socket now, on every replica."""
        return await _handle(request, Target("broadcast"))

    return router


async def _handle(request: Request, target: Target) -> JSONResponse:
    try:
        try:
            bus = runtime.current().bus
        except ContextError:
            raise _Refused(503, "bus_unavailable", "the chat server is not running") from None
        settings = bus.settings
        body = await _body(request, settings)
        caller, retry_key = _authenticate(request, body, settings)
        message = _parse(body)

        async def send() -> tuple[int, dict[str, Any]]:
            await _rate_limit(bus, caller)  # only new requests count: a replay is answered for free
            return await _send(bus, target, message)

        return await _idempotent(bus, caller, retry_key, body, send)
    except _Refused as refused:
        return _error(refused)
    except EnvelopeError as exc:
        return _error(_Refused(413, "too_large_for_the_bus", str(exc)))
    except BusUnavailable:
        return _error(_Refused(503, "bus_unavailable", "the message bus is unreachable; retry later"))


async def _body(request: Request, settings: Settings) -> bytes:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise _Refused(415, "unsupported_media_type", "the body must be application/json")
    limit = settings.webhook_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refused(413, "too_large", f"the body must be at most {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _Refused(413, "too_large", f"the body must be at most {limit} bytes")
    return bytes(body)


def _authenticate(request: Request, body: bytes, settings: Settings) -> tuple[str, str | None]:
    """(caller identity, retry key) from a Standard Webhooks signature or a service token."""
    headers = request.headers
    if any(name in headers for name in ("webhook-id", "webhook-timestamp", "webhook-signature")):
        return _verify_signature(headers, body, settings)
    if "authorization" in headers:
        try:
            user = verify_jwt(token_from_header(headers["authorization"]), settings)
        except AuthError as exc:
            raise _Refused(
                401,
                f"token_{exc.reason}",
                exc.message,
                {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc.message}"'},
            ) from None
        if SEND_SCOPE not in user.scopes:
            raise _Refused(403, "insufficient_scope", f"the token needs the {SEND_SCOPE!r} scope")
        retry_key = headers.get("idempotency-key")
        if retry_key is not None and not _WEBHOOK_ID.fullmatch(retry_key):
            raise _Refused(
                400, "bad_idempotency_key", "Idempotency-Key must be 1-256 visible ASCII characters"
            )
        return f"token:{user.identifier}", retry_key
    raise _Refused(401, "missing_credentials", "sign the request (webhook-* headers) or send a bearer token")


def _verify_signature(headers: Any, body: bytes, settings: Settings) -> tuple[str, str]:
    msg_id, stamp, signatures = (
        headers.get("webhook-id"),
        headers.get("webhook-timestamp"),
        headers.get("webhook-signature"),
    )
    if msg_id is None or stamp is None or signatures is None:
        missing = [
            n
            for n, v in (
                ("webhook-id", msg_id),
                ("webhook-timestamp", stamp),
                ("webhook-signature", signatures),
            )
            if v is None
        ]
        raise _Refused(400, "missing_header", f"missing {', '.join(missing)}")
    if not _WEBHOOK_ID.fullmatch(msg_id):
        raise _Refused(400, "bad_webhook_id", "webhook-id must be 1-256 visible ASCII characters")
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise _Refused(400, "bad_timestamp", "webhook-timestamp must be Unix seconds")
    if abs(time.time() - int(stamp)) > settings.webhook_tolerance_seconds:
        raise _Refused(401, "stale_timestamp", "webhook-timestamp is outside the tolerance")
    try:
        verify(secret_keys(settings.webhook_secrets), signatures, msg_id, stamp, body)
    except SignatureError as exc:
        raise _Refused(400 if exc.malformed else 401, exc.error, exc.message) from None
    # One sender whatever secret verified it: the secrets are rotations of one another.
    return "webhook-signer", msg_id


async def _rate_limit(bus: Bus, caller: str) -> None:
    limit = bus.settings.webhook_rate_limit
    if not limit:
        return
    window = int(time.time() // 60)
    if await bus.store.count(bus.keys.webhook_rate(caller, window), 60) > limit:
        retry_after = str(60 - int(time.time()) % 60)
        raise _Refused(
            429, "rate_limited", f"at most {limit} requests a minute", {"Retry-After": retry_after}
        )


def _parse(body: bytes) -> WebhookMessage:
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _Refused(400, "malformed_body", "the body is not valid JSON") from None
    except RecursionError:
        raise _Refused(400, "malformed_body", "the body nests too deeply") from None
    try:
        return WebhookMessage.model_validate_json(body)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise _Refused(422, "invalid_message", details[:1000]) from None


async def _idempotent(bus: Bus, caller: str, retry_key: str | None, body: bytes, send: Any) -> JSONResponse:
    """Run `send` once per (caller, retry key); a retry gets the first response, nothing resent."""
    if retry_key is None:
        status, content = await send()
        return JSONResponse(content, status)
    ttl = 2 * bus.settings.webhook_tolerance_seconds
    digest = hashlib.sha256(body).hexdigest()
    scope = hashlib.sha256(f"{caller}|{retry_key}".encode()).hexdigest()
    key = bus.keys.webhook_retry(scope)
    previous = await bus.store.claim(key, msgpack.packb({"body": digest}), ttl)
    if previous is not None:
        record = msgpack.unpackb(previous)
        if record.get("body") != digest:
            raise _Refused(409, "id_reused", "this webhook id was already used with a different body")
        if "status" not in record:
            raise _Refused(409, "in_progress", "a request with this webhook id is being processed")
        return JSONResponse(record["content"], record["status"], headers={"Idempotent-Replayed": "true"})
    try:
        status, content = await send()
    except BaseException:
        await bus.store.delete(key)  # nothing was sent: let the caller retry
        raise
    await bus.store.store(key, msgpack.packb({"body": digest, "status": status, "content": content}), ttl)
    return JSONResponse(content, status)


async def _send(bus: Bus, target: Target, message: WebhookMessage) -> tuple[int, dict[str, Any]]:
    if target.kind == "session" and not valid_session_id(target.id):
        return 404, _problem("session_not_found", "no such session")
    if target.kind == "user" and not 0 < len(target.id) <= _MAX_IDENTIFIER:
        return 404, _problem("user_not_found", "no such user")
    name, payload = client_event(
        message.content, message.author, event=message.event, metadata=message.metadata
    )
    try:
        receipt = await bus.send(Envelope(target, name, payload, bus.settings.replica_id))
    except SessionNotFound:
        return 404, _problem("session_not_found", "no such session (it never existed or has expired)")
    if target.kind == "user" and not receipt.delivered:
        return 404, _problem("user_has_no_sessions", "the user has no live session on any replica")
    return 202, _receipt(receipt)


def _receipt(receipt: Receipt) -> dict[str, Any]:
    return {
        "id": receipt.id,
        "target": {"kind": receipt.target.kind, "id": receipt.target.id},
        "offset": receipt.offset,
        "delivered": receipt.delivered,
        "status": receipt.status,
    }


def _problem(error: str, message: str) -> dict[str, str]:
    return {"error": error, "message": message}


def _error(refused: _Refused) -> JSONResponse:
    return JSONResponse(_problem(refused.error, refused.message), refused.status, headers=refused.headers)
