"""Webhook signatures against an independent implementation: the `standardwebhooks` package (the
Standard Webhooks project's own Python library) and the specification's published example vector.

Our signer and verifier agreeing with each other proves nothing about a shared mistake (say, the
secret used as text instead of base64-decoded bytes); agreeing with another implementation does.
Direct calls, no server: these run in milliseconds (and under `make mutate`).
"""

import base64
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bus import Settings
from web.signatures import SignatureError, secret_keys, verify
from web.webhooks import _Refused, _verify_signature, sign

# The example of the Standard Webhooks specification (and of its libraries' test suites).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_PAYLOAD = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def settings(*secrets: str, tolerance: int = 300) -> Settings:
    return Settings(webhook_secrets=secrets, webhook_tolerance_seconds=tolerance)


def headers(msg_id: str, stamp: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}


def test_the_specification_example_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD) == SPEC_SIGNATURE
    # The vector is from 2021: a tolerance reaching back to it lets our verifier check it.
    old_enough = settings(SPEC_SECRET, tolerance=int(time.time()) - SPEC_TIMESTAMP + 3600)
    assert _verify_signature(headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE), SPEC_PAYLOAD, old_enough) == (
        "webhook-signer",
        SPEC_ID,
    )
    # The independent library agrees on the same vector.
    when = datetime.fromtimestamp(SPEC_TIMESTAMP, tz=UTC)
    assert Webhook(SPEC_SECRET).sign(SPEC_ID, when, SPEC_PAYLOAD.decode()) == SPEC_SIGNATURE


@pytest.mark.parametrize(
    "change",
    [
        {"payload": b'{"test": 2432232315}'},
        {"msg_id": SPEC_ID + "x"},
        {"stamp": SPEC_TIMESTAMP + 1},
        {"secret": "whsec_" + base64.b64encode(b"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx").decode()},
    ],
)
def test_the_specification_vector_fails_when_any_input_changes(change: dict[str, object]) -> None:
    args = {"secret": SPEC_SECRET, "msg_id": SPEC_ID, "stamp": SPEC_TIMESTAMP, "payload": SPEC_PAYLOAD}
    args.update(change)
    old_enough = settings(str(args["secret"]), tolerance=int(time.time()) - SPEC_TIMESTAMP + 3600)
    hdrs = headers(str(args["msg_id"]), int(args["stamp"]), SPEC_SIGNATURE)  # type: ignore[call-overload]
    with pytest.raises(_Refused) as refused:
        _verify_signature(hdrs, args["payload"], old_enough)
    assert (refused.value.status, refused.value.error) == (401, "bad_signature")


SECRETS = st.binary(min_size=24, max_size=64).map(lambda key: "whsec_" + base64.b64encode(key).decode())
IDS = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=256)
BODIES = st.text(max_size=500)  # the library signs text; the body bytes are its UTF-8


@given(SECRETS, IDS, BODIES)
def test_signed_by_the_library_verified_by_ours(secret: str, msg_id: str, body: str) -> None:
    now = int(time.time())
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(now, tz=UTC), body)
    caller, key = _verify_signature(headers(msg_id, now, signature), body.encode(), settings(secret))
    assert (caller, key) == ("webhook-signer", msg_id)
    assert sign(secret, msg_id, now, body.encode()) == signature


@given(SECRETS, IDS, BODIES)
def test_signed_by_ours_verified_by_the_library(secret: str, msg_id: str, body: str) -> None:
    now = int(time.time())
    hdrs = headers(msg_id, now, sign(secret, msg_id, now, body.encode()))
    Webhook(secret).verify(body.encode(), hdrs, json_parse=False)  # raises if it does not verify


@given(SECRETS, SECRETS, IDS, BODIES)
def test_a_signature_with_another_secret_fails_in_both(
    secret: str, other: str, msg_id: str, body: str
) -> None:
    if base64.b64decode(secret[6:]) == base64.b64decode(other[6:]):
        return
    now = int(time.time())
    hdrs = headers(msg_id, now, sign(other, msg_id, now, body.encode()))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.encode(), hdrs, json_parse=False)
    with pytest.raises(_Refused):
        _verify_signature(hdrs, body.encode(), settings(secret))


def test_the_key_is_the_decoded_secret_not_its_text() -> None:
    """The mistake a self-consistent signer and verifier can share: HMAC keyed with the text."""
    import hashlib
    import hmac

    now = int(time.time())
    signed = f"id.{now}.".encode() + b"{}"
    text_keyed = hmac.new(SPEC_SECRET.removeprefix("whsec_").encode(), signed, hashlib.sha256).digest()
    wrong = "v1," + base64.b64encode(text_keyed).decode()
    assert sign(SPEC_SECRET, "id", now, b"{}") != wrong
    with pytest.raises(_Refused):
        _verify_signature(headers("id", now, wrong), b"{}", settings(SPEC_SECRET))


SECRET_FORM = "SWITCHBOARD_WEBHOOK_SECRETS entries must be whsec_ + base64 of 24-64 bytes"


def whsec(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


def test_secrets_of_24_to_64_bytes_are_keys() -> None:
    assert secret_keys([whsec(b"a" * 24), whsec(b"b" * 64)]) == [b"a" * 24, b"b" * 64]
    assert secret_keys([]) == []


@pytest.mark.parametrize(
    "secret",
    [
        whsec(b"a" * 23),
        whsec(b"a" * 65),
        whsec(b"a" * 32) + "!",  # base64 is read strictly: a stray character is no key
        whsec(b"a" * 32)[:-1] + "*",
        whsec(b"a" * 30) + "\n" + "YWFh",
        base64.b64encode(b"a" * 32).decode(),  # no whsec_ prefix
        "whsec_",
    ],
)
def test_a_bad_secret_is_refused_saying_what_one_looks_like(secret: str) -> None:
    with pytest.raises(ValueError) as raised:
        secret_keys([whsec(b"k" * 32), secret])
    assert str(raised.value) == SECRET_FORM


@pytest.mark.parametrize(
    ("keys", "header", "error", "malformed"),
    [
        ([], "v1,AAAA", "signatures_not_configured", False),
        ([b"k" * 32], "v1,AAAA", "bad_signature", False),
        ([b"k" * 32], "v2,AAAA", "bad_signature", False),
        ([b"k" * 32], "v1", "bad_signature_header", True),
        ([b"k" * 32], "v1,***", "bad_signature_header", True),
        ([b"k" * 32], "", "bad_signature_header", True),
    ],
)
def test_a_refused_signature_says_whether_it_was_malformed(
    keys: list[bytes], header: str, error: str, malformed: bool
) -> None:
    with pytest.raises(SignatureError) as raised:
        verify(keys, header, "id", "1", b"{}")
    refusal = raised.value
    assert (refusal.error, refusal.malformed) == (error, malformed)
    assert refusal.malformed is malformed  # a flag, not just something falsy
    assert str(refusal) == refusal.message and refusal.message
