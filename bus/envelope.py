"""The bus envelope: one msgpack-encoded message, decoded strictly and within explicit bounds."""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard, get_args

import msgpack

VERSION = 1
TargetKind = Literal["session", "user", "broadcast", "reply", "replica"]
_TARGET_KINDS: frozenset[str] = frozenset(get_args(TargetKind))
_MAX_DEPTH = 32
_MAX_NAME = 256
_FIELDS = 8  # version, id, created_at, target kind, target id, event, payload, origin


class EnvelopeError(ValueError):
    """Raised for any bus payload that is not a well-formed envelope of a known version."""


_OFFSET = re.compile(rb"\d{1,20}-\d{1,20}")
_POSITION = re.compile(rb"(\d{1,20}-\d{1,20}):([0-9a-f]{1,32})")


def frame(offset: str, epoch: str, data: bytes) -> bytes:
    """What travels on a channel: `<offset>:<epoch>` (empty if not logged), a space, the envelope.

    The epoch names the session log the offset counts in (a new log after a data loss has a new
    one). The Redis send script builds the same frame in Lua (bus/redis_backend.py).
    """
    return (f"{offset}:{epoch}".encode() if offset else b"") + b" " + data


def unframe(raw: bytes) -> tuple[str, str, bytes]:
    """(offset, epoch, envelope bytes) of a frame; ("", "", ...) for an unlogged one."""
    position, space, data = raw.partition(b" ")
    if not space:
        raise EnvelopeError("not a bus frame (position, space, envelope)")
    if not position:
        return "", "", data
    found = _POSITION.fullmatch(position)
    if found is None:
        raise EnvelopeError("not a bus frame (position, space, envelope)")
    return found[1].decode(), found[2].decode(), data


def offset_key(offset: str) -> tuple[int, int]:
    """Offsets are Redis stream ids, `<n>-0` with n counting a session's messages; compare by this."""
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq or 0)


def valid_offset(value: object) -> TypeGuard[str]:
    """Whether `value` is an offset Redis could hold: `<n>-<m>`, both below 2^64."""
    if not (isinstance(value, str) and _OFFSET.fullmatch(value.encode()) is not None):
        return False
    ms, seq = offset_key(value)
    return ms < 2**64 and seq < 2**64


@dataclass(frozen=True, slots=True)
class Target:
    """Whom an envelope is for: one session, all sessions of one user, or everyone (and, for the
    servers themselves, a question's reply channel or one replica's own channel)."""

    kind: TargetKind
    id: str = ""

    @classmethod
    def session(cls, session_id: str) -> Target:
        return cls("session", session_id)


def new_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: unique, and sortable by creation time."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return f"{value:032x}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A client event addressed to a target, as it travels between processes."""

    target: Target
    event: str
    payload: dict[str, Any]
    origin: str
    id: str = field(default_factory=new_id)
    created_at: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        """msgpack bytes; EnvelopeError if the payload is not one `decode` accepts (e.g. NaN)."""
        _check_value(self.payload, 0)
        try:
            return self._pack()
        except (TypeError, ValueError, OverflowError) as exc:
            raise EnvelopeError(f"payload cannot be encoded: {exc}") from None

    def _pack(self) -> bytes:
        data: bytes = msgpack.packb(
            [
                VERSION,
                self.id,
                self.created_at,
                self.target.kind,
                self.target.id,
                self.event,
                self.payload,
                self.origin,
            ],
            use_bin_type=True,
        )
        return data

    @classmethod
    def decode(cls, data: bytes, *, max_bytes: int) -> Envelope:
        """Decode `data`, raising EnvelopeError unless it is a valid envelope of at most `max_bytes`."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise EnvelopeError(f"expected bytes, got {type(data).__name__}")
        if len(data) > max_bytes:
            raise EnvelopeError(f"envelope of {len(data)} bytes exceeds the limit of {max_bytes}")
        try:
            fields = msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=True,
                ext_hook=_reject_ext,
                timestamp=0,
            )
        except EnvelopeError:
            raise
        except Exception as exc:  # msgpack raises a zoo of types for truncated or bad input
            raise EnvelopeError(f"not a msgpack envelope: {exc.__class__.__name__}: {exc}") from None
        if not isinstance(fields, list) or not fields:
            raise EnvelopeError("envelope must be a non-empty msgpack array")
        if fields[0] != VERSION or type(fields[0]) is not int:
            raise EnvelopeError(f"unknown envelope version {fields[0]!r}")
        if len(fields) != _FIELDS:
            raise EnvelopeError(f"version {VERSION} envelope has {_FIELDS} fields, got {len(fields)}")
        _, id_, created_at, kind, target_id, event, payload, origin = fields
        _check_name("id", id_)
        if type(created_at) not in (float, int):
            raise EnvelopeError("created_at must be a number")
        if kind not in _TARGET_KINDS:
            raise EnvelopeError(f"unknown target kind {kind!r}")
        _check_name("target id", target_id, allow_empty=kind == "broadcast")
        _check_name("event", event)
        _check_name("origin", origin)
        if not isinstance(payload, dict):
            raise EnvelopeError("payload must be a map")
        _check_value(payload, 0)
        return cls(Target(kind, target_id), event, payload, origin, id_, float(created_at))


def _reject_ext(code: int, data: bytes) -> Any:
    raise EnvelopeError(f"msgpack extension type {code} is not allowed")


def _check_name(what: str, value: object, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise EnvelopeError(f"{what} must be a string, got {type(value).__name__}")
    if not (allow_empty or value) or len(value) > _MAX_NAME:
        raise EnvelopeError(f"{what} must be 1 to {_MAX_NAME} characters")


def _check_value(value: object, depth: int) -> None:
    """Payloads hold only JSON-like values (plus bytes), nested at most _MAX_DEPTH deep."""
    if depth > _MAX_DEPTH:
        raise EnvelopeError(f"payload nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EnvelopeError("payload numbers must be finite (no NaN or Infinity: JSON has none)")
        return
    if value is None or isinstance(value, bool | int | str | bytes):
        return
    if isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EnvelopeError("payload map keys must be strings")
            _check_value(item, depth + 1)
    else:
        raise EnvelopeError(f"payload holds a value of type {type(value).__name__}")
