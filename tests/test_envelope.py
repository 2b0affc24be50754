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


def _as_fields(envelope: Envelope) -> list[object]:
    t = envelope.target
    return [
        1,
        envelope.id,
        envelope.created_at,
        t.kind,
        t.id,
        envelope.event,
        envelope.payload,
        envelope.origin,
    ]


@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_refused_or_decoded_exactly(data: bytes) -> None:
    try:
        envelope = Envelope.decode(data, max_bytes=LIMIT)
    except EnvelopeError:
        return
    # Accepted: it must be exactly what the bytes say, field by field, and survive a round trip.
    assert msgpack.unpackb(data, raw=False) == _as_fields(envelope)
    assert Envelope.decode(envelope.encode(), max_bytes=LIMIT) == envelope


@given(st.binary(min_size=1, max_size=64).filter(lambda b: b[:1] not in (b"\x98", b"\xdc", b"\xdd")))
def test_bytes_that_are_no_8_element_array_are_refused(data: bytes) -> None:
    # An envelope starts with an 8-element array header (fixarray 0x98, or array16/32 holding 8).
    with pytest.raises(EnvelopeError):
        Envelope.decode(data, max_bytes=LIMIT)


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(
    st.sampled_from(["session", "user", "reply"]),
    st.text(min_size=1, max_size=256),
    st.text(min_size=1, max_size=256),
    st.dictionaries(st.text(), JSONISH, max_size=5),
    st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
)
def test_valid_envelopes_round_trip_exactly(
    kind: str, target: str, event: str, payload: dict[str, object], created: float
) -> None:
    envelope = Envelope(Target(kind, target), event, payload, "origin-1", created_at=created)  # type: ignore[arg-type]
    back = Envelope.decode(envelope.encode(), max_bytes=1 << 20)
    assert back == envelope and type(back.created_at) is float


def test_nesting_of_exactly_32_levels_is_accepted_and_33_refused() -> None:
    # The payload map is level 0; {"d": [[...1...]]} with 31 lists puts the 1 at level 32.
    assert Envelope.decode(fields(payload={"d": _deep(31)}), max_bytes=LIMIT).payload == {"d": _deep(31)}
    deep_map: object = 1
    for _ in range(31):
        deep_map = {"k": deep_map}
    assert Envelope.decode(fields(payload={"m": deep_map}), max_bytes=LIMIT).payload == {"m": deep_map}
    for too_deep in ({"d": _deep(32)}, {"m": {"k": deep_map}}):
        with pytest.raises(EnvelopeError, match="nested deeper than 32"):
            Envelope.decode(fields(payload=too_deep), max_bytes=LIMIT)


def test_names_of_exactly_256_characters_are_accepted() -> None:
    envelope = Envelope.decode(fields(event="e" * 256, id="i" * 256, origin="o" * 256), max_bytes=LIMIT)
    assert (envelope.event, envelope.id, envelope.origin) == ("e" * 256, "i" * 256, "o" * 256)
    with pytest.raises(EnvelopeError, match="1 to 256"):
        Envelope.decode(fields(origin="o" * 257), max_bytes=LIMIT)


def test_only_a_broadcast_has_an_empty_target_id() -> None:
    broadcast = Envelope(Target("broadcast"), "new_message", {}, "r1")
    assert Envelope.decode(broadcast.encode(), max_bytes=LIMIT) == broadcast
    for kind in ("session", "user", "reply"):
        with pytest.raises(EnvelopeError, match="target id must be 1 to 256"):
            Envelope.decode(fields(kind=kind, target=""), max_bytes=LIMIT)


def test_limit_is_inclusive() -> None:
    envelope = sample()
    data = envelope.encode()
    assert Envelope.decode(data, max_bytes=len(data)) == envelope
    with pytest.raises(EnvelopeError, match="exceeds the limit"):
        Envelope.decode(data, max_bytes=len(data) - 1)


def test_ids_carry_the_creation_millisecond() -> None:
    seen: set[int] = set()
    while len(seen) < 5:  # a few different milliseconds, odd and even
        before = time.time_ns() // 1_000_000
        value = new_id()
        after = time.time_ns() // 1_000_000
        if before == after:
            assert int(value[:12], 16) == before
            seen.add(before)


FINITE = "payload numbers must be finite (no NaN or Infinity: JSON has none)"

#: Each refusal's whole message: it is what the bus logs for a malformed envelope, and it must say why.
MESSAGES: list[tuple[bytes, str]] = [
    (msgpack.packb({"a": 1}), "envelope must be a non-empty msgpack array"),
    (msgpack.packb([]), "envelope must be a non-empty msgpack array"),
    (fields(version=2), "unknown envelope version 2"),
    (fields(version="1"), "unknown envelope version '1'"),
    (msgpack.packb([1, "i"]), "version 1 envelope has 8 fields, got 2"),
    (fields(id=7), "id must be a string, got int"),
    (fields(event=b"new_message"), "event must be a string, got bytes"),
    (fields(event=""), "event must be 1 to 256 characters"),
    (fields(created_at="now"), "created_at must be a number"),
    (fields(kind="room"), "unknown target kind 'room'"),
    (fields(payload=[1]), "payload must be a map"),
    (fields(payload={"a": msgpack.ExtType(5, b"x")}), "msgpack extension type 5 is not allowed"),
    (fields(payload={"x": [float("nan")]}), FINITE),
    (fields(payload={"x": float("-inf")}), FINITE),
    (fields(payload={"deep": _deep(33)}), "payload nested deeper than 32 levels"),
    (b"x" * (LIMIT + 1), f"envelope of {LIMIT + 1} bytes exceeds the limit of {LIMIT}"),
]


@pytest.mark.parametrize(("data", "message"), MESSAGES)
def test_each_refusal_says_exactly_why(data: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError) as raised:
        Envelope.decode(data, max_bytes=LIMIT)
    assert str(raised.value) == message


def test_non_bytes_are_refused_naming_their_type() -> None:
    with pytest.raises(EnvelopeError) as raised:
        Envelope.decode("text", max_bytes=LIMIT)  # type: ignore[arg-type]
    assert str(raised.value) == "expected bytes, got str"


def test_map_keys_that_are_not_strings_are_refused_by_the_decoder_itself() -> None:
    """msgpack builds no map with other keys (strict_map_key): a flood of colliding int keys never
    reaches a dict; the message says which check refused it."""
    data = msgpack.packb([1, "i", 1.0, "session", "s", "e", {"a": {1: 2}}, "o"])
    with pytest.raises(EnvelopeError, match=r"^not a msgpack envelope: ValueError: .*strict_map_key"):
        Envelope.decode(data, max_bytes=LIMIT)


def payload_of(payload: dict[str, object]) -> Envelope:
    return Envelope(Target.session("s" * 24), "new_message", payload, "r1")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_encode_refuses_non_finite_numbers(bad: float) -> None:
    with pytest.raises(EnvelopeError) as raised:
        payload_of({"metadata": {"x": [bad]}}).encode()
    assert str(raised.value) == FINITE


def test_encode_refuses_what_decode_would_refuse() -> None:
    with pytest.raises(EnvelopeError) as raised:
        payload_of({"m": {1: "one"}}).encode()  # type: ignore[dict-item]
    assert str(raised.value) == "payload map keys must be strings"
    with pytest.raises(EnvelopeError) as raised:
        payload_of({"set": {1, 2}}).encode()
    assert str(raised.value) == "payload holds a value of type set"
    with pytest.raises(EnvelopeError) as raised:
        payload_of({"d": _deep(32)}).encode()
    assert str(raised.value) == "payload nested deeper than 32 levels"


def test_encode_accepts_exactly_32_levels() -> None:
    envelope = payload_of({"d": _deep(31)})  # the 1 at level 32, as decode counts
    assert Envelope.decode(envelope.encode(), max_bytes=LIMIT) == envelope


def test_an_integer_msgpack_cannot_hold_is_an_envelope_error_that_says_so() -> None:
    with pytest.raises(EnvelopeError) as raised:
        payload_of({"n": 2**64}).encode()
    prefix, _, cause = str(raised.value).partition(": ")
    assert prefix == "payload cannot be encoded" and cause  # msgpack's own words follow
