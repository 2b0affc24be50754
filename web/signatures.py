"""Standard Webhooks v1 signatures: `whsec_` secrets, signing, and constant-time verification."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable


class SignatureError(ValueError):
    """A `webhook-signature` header that is malformed (400) or matches no secret (401)."""

    def __init__(self, error: str, message: str, *, malformed: bool) -> None:
        super().__init__(message)
        self.error, self.message, self.malformed = error, message, malformed


def secret_keys(secrets: Iterable[str]) -> list[bytes]:
    """The HMAC keys of `whsec_` secrets (SWITCHBOARD_WEBHOOK_SECRETS); ValueError for a bad one."""
    keys = []
    for secret in secrets:
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not secret.startswith("whsec_") or not 24 <= len(key) <= 64:
            raise ValueError("SWITCHBOARD_WEBHOOK_SECRETS entries must be whsec_ + base64 of 24-64 bytes")
        keys.append(key)
    return keys


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for a request (for callers and tests)."""
    return "v1," + base64.b64encode(_digest(secret_keys([secret])[0], msg_id, str(timestamp), body)).decode()


def verify(keys: list[bytes], header: str, msg_id: str, timestamp: str, body: bytes) -> None:
    """Return if one v1 signature of `header` matches one key; SignatureError otherwise."""
    offered = _signature_list(header)
    if not keys:
        raise SignatureError(
            "signatures_not_configured", "this server has no webhook secrets", malformed=False
        )
    for key in keys:
        expected = _digest(key, msg_id, timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return
    raise SignatureError("bad_signature", "no signature matches", malformed=False)


def _digest(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def _signature_list(header: str) -> list[bytes]:
    """The v1 signatures of a `webhook-signature` header (space-separated `v1,<base64>`)."""
    entries = header.split()
    if not entries or len(entries) > 16:
        raise SignatureError(
            "bad_signature_header", "webhook-signature must list 1-16 signatures", malformed=True
        )
    found = []
    for entry in entries:
        version, comma, encoded = entry.partition(",")
        if not comma or not version or not encoded:
            raise SignatureError(
                "bad_signature_header", "each signature must be `<version>,<base64>`", malformed=True
            )
        if version != "v1":
            continue  # other schemes (e.g. v1a) are not ours to check
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise SignatureError(
                "bad_signature_header", "a v1 signature is not valid base64", malformed=True
            ) from None
    if not found:
        raise SignatureError("bad_signature", "no v1 signature offered", malformed=False)
    return found
