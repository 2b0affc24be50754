import time

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus import Envelope, EnvelopeError, Target
from bus.envelope import new_id

LIMIT = 4096


def sample() -> Envelope:
    return Envelope(
        Target.session("s" * 24), "new_message", {"output": "hi", "n": [1, 2.5, None, b"x"]}, "r1"
    )


def test_round_trip_keeps_every_field() -> None:
    envelope = sample()
    assert Envelope.decode(envelope.encode(), max_bytes=LIMIT) == envelope


def test_ids_are_uuid7_and_sortable() -> None:
    ids = [new_id() for _ in range(200)]
    assert all(len(i) == 32 and i[12] == "7" and i[16] in "89ab" for i in ids)
    assert len(set(ids)) == 200
    first = new_id()
    time.sleep(0.002)  # ids sort by millisecond: wait for the clock to move on, not for an event
    later = new_id()
    assert first < later


def _deep(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def fields(**changes: object) -> bytes:
    base: dict[str, object] = {
        "version": 1,
        "id": "abc",
        "created_at": 1.5,
        "kind": "session",
        "target": "s" * 24,
        "event": "new_message",
        "payload": {},
        "origin": "r1",
    }
    base.update(changes)
    return msgpack.packb(list(base.values()))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (sample().encode()[:-4], "not a msgpack envelope"),
        (b"", "not a msgpack envelope"),
        (b"\xc1", "not a msgpack envelope"),
        (sample().encode() + b"\x00", "not a msgpack envelope"),
        (msgpack.packb({"a": 1}), "array"),
        (msgpack.packb([]), "array"),
        (fields(version=2), "unknown envelope version"),
        (fields(version="1"), "unknown envelope version"),
        (fields(version=True), "unknown envelope version"),
        (msgpack.packb([1, "id"]), "fields"),
        (fields(id=7), "id must be a string"),
        (fields(id=""), "id must be"),
        (fields(created_at="now"), "created_at"),
        (fields(kind="room"), "unknown target kind"),
        (fields(target=None), "target id"),
        (fields(event=b"new_message"), "event must be a string"),
        (fields(event="x" * 300), "event must be"),
        (fields(payload=[1]), "payload must be a map"),
        (fields(payload={"a": msgpack.ExtType(5, b"x")}), "extension type"),
        (fields(payload={"a": msgpack.Timestamp(1)}), "Timestamp"),
        (msgpack.packb([1, "i", 1.0, "session", "s", "e", {1: 2}, "o"]), "map key"),
        (fields(payload={"a": {"b": [{"c": 1}]}} | {"deep": _deep(40)}), "nested deeper"),
        (fields(origin=None), "origin must be a string"),
        (b"x" * (LIMIT + 1), "exceeds the limit"),
    ],
)
def test_bad_input_raises_envelope_error(data: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        Envelope.decode(data, max_bytes=LIMIT)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(EnvelopeError, match="expected bytes"):
        Envelope.decode("text", max_bytes=LIMIT)  # type: ignore[arg-type]


@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_envelope_error(data: bytes) -> None:
    try:
        Envelope.decode(data, max_bytes=LIMIT)
    except EnvelopeError:
        pass
