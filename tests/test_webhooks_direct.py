"""The webhook endpoints in process, on the memory bus: signature checks, idempotency, the rate limit
and every refusal, in milliseconds. The same promises on real replicas and Redis are in
tests/test_webhooks.py; these exist so `make mutate` can run them for every mutant.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgpack
import pytest
from fastapi import FastAPI

from bus import BusUnavailable, Settings, Target
from bus.memory_backend import _hub
from web import User, create_jwt, webhook_router, webhooks
from web.server import ChatServer
from web.webhooks import sign

SECRET = "whsec_" + base64.b64encode(b"d" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"e" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"f" * 32).decode()
AUTH = "q" * 48
SESSION = "W" * 24
BODY = json.dumps({"content": "Build finished", "author": "ci"}).encode()
PATH = f"/hooks/sessions/{SESSION}/messages"

Post = Callable[..., Any]


@pytest.fixture
def overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def hooks(overrides: dict[str, Any]) -> AsyncIterator[tuple[ChatServer, Post]]:
    base: dict[str, Any] = {"webhook_secrets": (SECRET, OLD), "auth_secret": AUTH}
    # A key prefix of its own per test: the memory bus is process-wide.
    settings = Settings(key_prefix=f"wd{uuid.uuid4().hex[:8]}", **{**base, **overrides})
    app = FastAPI()
    app.include_router(webhook_router())
    async with ChatServer(settings) as server:
        await server.bus.registry.create(SESSION, user=None, thread_id=None, resume_token="t")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:

            async def post(
                path: str = PATH, body: bytes = BODY, headers: dict[str, Any] | None = None
            ) -> Any:
                return await client.post(path, content=body, headers=headers or {})

            yield server, post


def signed(
    body: bytes = BODY, *, secret: str = SECRET, msg_id: str | None = None, stamp: int | None = None
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time()) if stamp is None else stamp
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, msg_id, stamp, body),
    }


def token(identifier: str = "service:ci", scope: str | None = "sessions:send") -> dict[str, str]:
    value = create_jwt(User(identifier), settings=Settings(auth_secret=AUTH), scope=scope)
    return {"content-type": "application/json", "authorization": f"Bearer {value}"}


async def logged(server: ChatServer) -> list[str]:
    return [e.payload["output"] for _, e in (await server.bus.read_log(SESSION, "0-0")).entries]


async def test_a_signed_send_is_logged_once_and_a_retry_replays_the_answer(
    hooks: tuple[ChatServer, Post],
) -> None:
    server, post = hooks
    headers = signed()
    first = await post(headers=headers)
    assert first.status_code == 202
    receipt = first.json()
    assert receipt["target"] == {"kind": "session", "id": SESSION}
    assert (receipt["offset"], receipt["delivered"], receipt["status"]) == ("1-0", 0, "queued")
    assert len(receipt["id"]) == 32 and int(receipt["id"], 16)
    ((_, envelope),) = (await server.bus.read_log(SESSION, "0-0")).entries
    assert envelope.id == receipt["id"] and envelope.event == "new_message"
    assert (envelope.payload["name"], envelope.payload["metadata"]) == ("ci", {})
    assert "idempotent-replayed" not in first.headers
    # A retry re-signed later with the other (rotated) secret: the same message.
    retry = await post(headers=signed(secret=OLD, msg_id=headers["webhook-id"], stamp=int(time.time()) + 1))
    assert retry.status_code == 202 and retry.json() == receipt
    assert retry.headers["idempotent-replayed"] == "true"
    other = json.dumps({"content": "other"}).encode()
    conflict = await post(body=other, headers=signed(other, msg_id=headers["webhook-id"]))
    assert conflict.status_code == 409 and conflict.json()["error"] == "id_reused"
    assert await logged(server) == ["Build finished"]


async def test_without_a_retry_key_every_request_is_sent(hooks: tuple[ChatServer, Post]) -> None:
    server, post = hooks
    for _ in range(2):
        sent = await post(headers=token())
        assert sent.status_code == 202 and sent.json()["status"] == "queued"
    assert await logged(server) == ["Build finished", "Build finished"]
    keyed = {**token(), "idempotency-key": "job-1"}
    first, again = await post(headers=keyed), await post(headers=keyed)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    # Retry keys are per caller: another service's job-1 is its own message.
    theirs = await post(headers={**token("service:other"), "idempotency-key": "job-1"})
    assert "idempotent-replayed" not in theirs.headers
    assert len(await logged(server)) == 4


async def test_a_claim_still_held_is_409_in_progress(hooks: tuple[ChatServer, Post]) -> None:
    server, post = hooks
    headers = signed()
    scope = hashlib.sha256(f"webhook-signer|{headers['webhook-id']}".encode()).hexdigest()
    key = server.bus.keys.webhook_retry(scope)
    await server.bus.store.claim(key, msgpack.packb({"body": hashlib.sha256(BODY).hexdigest()}), 60)
    response = await post(headers=headers)
    assert response.status_code == 409 and response.json()["error"] == "in_progress"
    assert await logged(server) == []


async def test_404s_are_stored_and_replayed(hooks: tuple[ChatServer, Post]) -> None:
    _, post = hooks
    for path, error in [
        ("/hooks/users/nobody/messages", "user_has_no_sessions"),
        (f"/hooks/users/{'u' * 257}/messages", "user_not_found"),
        (f"/hooks/sessions/{'U' * 24}/messages", "session_not_found"),
        ("/hooks/sessions/short/messages", "session_not_found"),
    ]:
        headers = signed()
        first, again = await post(path, headers=headers), await post(path, headers=headers)
        assert first.status_code == again.status_code == 404 and first.json()["error"] == error, path
        assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()


async def test_broadcast_with_nobody_listening_is_dropped_and_a_user_of_256_is_looked_up(
    hooks: tuple[ChatServer, Post],
) -> None:
    _, post = hooks
    everyone = await post("/hooks/broadcast", headers=signed())
    assert everyone.status_code == 202
    assert everyone.json()["target"] == {"kind": "broadcast", "id": ""}
    assert everyone.json()["delivered"] == 1  # this chat server's broadcast subscription
    user = await post(f"/hooks/users/{'u' * 256}/messages", headers=signed())
    assert user.status_code == 404 and user.json()["error"] == "user_has_no_sessions"


SIGNATURE_CASES: dict[str, tuple[Callable[[], dict[str, str]], int, str]] = {
    "no id": (lambda: {k: v for k, v in signed().items() if k != "webhook-id"}, 400, "missing_header"),
    "no stamp": (
        lambda: {k: v for k, v in signed().items() if k != "webhook-timestamp"},
        400,
        "missing_header",
    ),
    "no signature": (
        lambda: {k: v for k, v in signed().items() if k != "webhook-signature"},
        400,
        "missing_header",
    ),
    "id with space": (lambda: signed(msg_id="a b"), 400, "bad_webhook_id"),
    "id of 257": (lambda: signed(msg_id="i" * 257), 400, "bad_webhook_id"),
    "stamp text": (lambda: {**signed(), "webhook-timestamp": "12a"}, 400, "bad_timestamp"),
    "stamp of 13 digits": (lambda: {**signed(), "webhook-timestamp": "1" * 13}, 400, "bad_timestamp"),
    "stale": (lambda: signed(stamp=int(time.time()) - 302), 401, "stale_timestamp"),
    "future": (lambda: signed(stamp=int(time.time()) + 302), 401, "stale_timestamp"),
    "wrong secret": (lambda: signed(secret=OTHER), 401, "bad_signature"),
    "only v1a": (lambda: {**signed(), "webhook-signature": "v1a,AAAA"}, 401, "bad_signature"),
    "no comma": (lambda: {**signed(), "webhook-signature": "v1AAAA"}, 400, "bad_signature_header"),
    "empty version": (lambda: {**signed(), "webhook-signature": ",AAAA"}, 400, "bad_signature_header"),
    "empty value": (lambda: {**signed(), "webhook-signature": "v1,"}, 400, "bad_signature_header"),
    "not base64": (lambda: {**signed(), "webhook-signature": "v1,***"}, 400, "bad_signature_header"),
    "blank list": (lambda: {**signed(), "webhook-signature": " "}, 400, "bad_signature_header"),
    "17 entries": (
        lambda: {**signed(), "webhook-signature": " ".join(["v1a,AAAA"] * 17)},
        400,
        "bad_signature_header",
    ),
}


@pytest.mark.parametrize("case", SIGNATURE_CASES)
async def test_signature_refusals(case: str, hooks: tuple[ChatServer, Post]) -> None:
    server, post = hooks
    make, status, error = SIGNATURE_CASES[case]
    response = await post(headers=make())
    assert (response.status_code, response.json()["error"]) == (status, error), response.text
    assert await logged(server) == []


async def test_signature_lists_are_searched_and_near_tolerance_stamps_accepted(
    hooks: tuple[ChatServer, Post],
) -> None:
    _, post = hooks
    good = signed()
    others = [sign(OTHER, good["webhook-id"], int(good["webhook-timestamp"]), BODY)] * 14
    listed = {**good, "webhook-signature": " ".join(["v1a,AAAA", *others, good["webhook-signature"]])}
    assert (await post(headers=listed)).status_code == 202  # 16 entries, the good one last
    for stamp in (int(time.time()) - 295, int(time.time()) + 295):
        assert (await post(headers=signed(stamp=stamp))).status_code == 202


async def test_signed_requests_ignore_the_authorization_header(hooks: tuple[ChatServer, Post]) -> None:
    _, post = hooks
    response = await post(headers={**signed(secret=OTHER), "authorization": token()["authorization"]})
    assert response.status_code == 401 and response.json()["error"] == "bad_signature"


async def test_token_refusals(hooks: tuple[ChatServer, Post]) -> None:
    server, post = hooks
    json_type = {"content-type": "application/json"}
    for headers, status, error in [
        (json_type, 401, "missing_credentials"),
        ({**json_type, "authorization": "Bearer nope"}, 401, "token_malformed"),
        ({**json_type, "authorization": "Basic abc"}, 401, "token_wrong_scheme"),
        (token(scope=None), 403, "insufficient_scope"),
        (token(scope="sessions:read"), 403, "insufficient_scope"),
        ({**token(), "idempotency-key": "a b"}, 400, "bad_idempotency_key"),
        ({**token(), "idempotency-key": "k" * 257}, 400, "bad_idempotency_key"),
    ]:
        response = await post(headers=headers)
        assert (response.status_code, response.json()["error"]) == (status, error), headers
        if status == 401 and error != "missing_credentials":
            assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert (
        await post(headers={**token(scope="other sessions:send"), "idempotency-key": "k" * 256})
    ).status_code == 202
    assert await logged(server) == ["Build finished"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        (BODY, {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (BODY, {"content-type": "application/json; charset=utf-8"}, 202, None),
        (BODY, {"content-type": "Application/JSON"}, 202, None),
        (b"{nope", {}, 400, "malformed_body"),
        (b"\xff\xfe", {}, 400, "malformed_body"),
        (b"{}", {}, 422, "invalid_message"),
        (b'{"content": "x", "extra": 1}', {}, 422, "invalid_message"),
        (b'{"content": "x", "event": "session"}', {}, 422, "invalid_message"),
        (b'{"content": "x", "event": "Bad"}', {}, 422, "invalid_message"),
        (b'{"content": "x", "author": ""}', {}, 422, "invalid_message"),
        (json.dumps({"content": "x" * 32_769}).encode(), {}, 422, "invalid_message"),
        (json.dumps({"content": "x", "metadata": {"n": 2**64}}).encode(), {}, 422, "invalid_message"),
        (json.dumps({"content": "x", "metadata": {"n": 2**64 - 1, "m": -(2**63)}}).encode(), {}, 202, None),
        (json.dumps({"content": "x", "metadata": {"n": -(2**63) - 1}}).encode(), {}, 422, "invalid_message"),
        (json.dumps({"content": "x", "metadata": {"a": [[[[[[[1]]]]]]]}}).encode(), {}, 202, None),
        (
            json.dumps({"content": "x", "metadata": {"a": [[[[[[[[1]]]]]]]]}}).encode(),
            {},
            422,
            "invalid_message",
        ),
        (json.dumps({"content": "x", "metadata": {"t": True}}).encode(), {}, 202, None),
    ],
)
async def test_body_checks(
    body: bytes, headers: dict[str, str], status: int, error: str | None, hooks: tuple[ChatServer, Post]
) -> None:
    server, post = hooks
    response = await post(body=body, headers={**signed(body), **headers})
    assert response.status_code == status, response.text
    if error is not None:
        assert response.json()["error"] == error
        assert await logged(server) == []


@pytest.mark.parametrize("overrides", [{"webhook_max_bytes": 100}])
async def test_bodies_over_the_limit_are_413_too_large(hooks: tuple[ChatServer, Post]) -> None:
    _, post = hooks
    exact = json.dumps({"content": "x" * 85}).encode()
    assert len(exact) == 100
    assert (await post(body=exact, headers=signed(exact))).status_code == 202
    over = json.dumps({"content": "x" * 86}).encode()
    response = await post(body=over, headers=signed(over))
    assert response.status_code == 413 and response.json()["error"] == "too_large"


@pytest.mark.parametrize("overrides", [{"webhook_max_bytes": 100}])
async def test_a_chunked_body_over_the_limit_is_413_too_large_while_it_is_read(
    hooks: tuple[ChatServer, Post],
) -> None:
    _, post = hooks
    body = json.dumps({"content": "x" * 200}).encode()

    async def chunks() -> Any:  # no Content-Length: the limit is checked while reading
        for start in range(0, len(body), 50):
            yield body[start : start + 50]

    response = await post(body=chunks(), headers=signed(body))  # type: ignore[arg-type]
    assert response.status_code == 413
    assert response.json() == {"error": "too_large", "message": "the body must be at most 100 bytes"}
    small = json.dumps({"content": "x" * 10}).encode()

    async def one() -> Any:
        yield small

    assert (await post(body=one(), headers=signed(small))).status_code == 202  # type: ignore[arg-type]


@pytest.mark.parametrize("overrides", [{"max_envelope_bytes": 2048}])
async def test_a_message_too_large_for_the_bus_is_413_and_stores_nothing(
    hooks: tuple[ChatServer, Post],
) -> None:
    server, post = hooks
    big = json.dumps({"content": "x" * 4000}).encode()
    headers = signed(big)
    first, again = await post(body=big, headers=headers), await post(body=big, headers=headers)
    assert first.status_code == again.status_code == 413
    assert first.json()["error"] == again.json()["error"] == "too_large_for_the_bus"
    assert "idempotent-replayed" not in again.headers  # the claim was released: nothing stored
    assert await logged(server) == []


@pytest.mark.parametrize("overrides", [{"webhook_rate_limit": 2}])
async def test_the_rate_limit_counts_new_requests_per_caller_per_minute(
    hooks: tuple[ChatServer, Post],
) -> None:
    _, post = hooks
    for _attempt in range(5):  # a burst across a minute boundary proves nothing: run it again
        caller = token(f"service:{uuid.uuid4().hex[:8]}")
        start = time.time()
        first = await post(headers={**caller, "idempotency-key": "k1"})
        replay = await post(headers={**caller, "idempotency-key": "k1"})
        second = await post(headers={**caller, "idempotency-key": "k2"})
        before = time.time()
        limited = await post(headers={**caller, "idempotency-key": "k3"})
        after = time.time()
        replay_over = await post(headers={**caller, "idempotency-key": "k2"})
        someone_else = await post(headers=token(f"service:{uuid.uuid4().hex[:8]}"))
        if int(start // 60) == int(time.time() // 60):
            break
    else:
        raise AssertionError("5 bursts in a row straddled a minute boundary: is the clock jumping?")
    assert [r.status_code for r in (first, replay, second, limited)] == [202, 202, 202, 429]
    assert replay.headers["idempotent-replayed"] == replay_over.headers["idempotent-replayed"] == "true"
    assert replay_over.status_code == someone_else.status_code == 202
    assert limited.json()["error"] == "rate_limited"
    assert 60 - int(after) % 60 <= int(limited.headers["retry-after"]) <= 60 - int(before) % 60


async def test_the_rate_limit_is_off_by_default(hooks: tuple[ChatServer, Post]) -> None:
    _, post = hooks
    assert [(await post(headers=token())).status_code for _ in range(5)] == [202] * 5


async def test_a_custom_event_carries_content_author_and_metadata(hooks: tuple[ChatServer, Post]) -> None:
    server, post = hooks
    body = json.dumps({"content": "42%", "author": "job", "event": "progress", "metadata": {"n": 7}}).encode()
    assert (await post(body=body, headers=signed(body))).status_code == 202
    ((offset, envelope),) = (await server.bus.read_log(SESSION, "0-0")).entries
    assert (offset, envelope.event) == ("1-0", "progress")
    assert envelope.payload == {"content": "42%", "author": "job", "metadata": {"n": 7}}


async def test_a_one_character_user_is_looked_up(hooks: tuple[ChatServer, Post]) -> None:
    _, post = hooks
    response = await post("/hooks/users/a/messages", headers=signed())
    assert response.json()["error"] == "user_has_no_sessions"


@pytest.mark.parametrize("overrides", [{"webhook_secrets": ()}])
async def test_signed_requests_without_secrets_are_401_signatures_not_configured(
    hooks: tuple[ChatServer, Post],
) -> None:
    _, post = hooks
    response = await post(headers=signed())
    assert response.status_code == 401
    assert response.json() == {
        "error": "signatures_not_configured",
        "message": "this server has no webhook secrets",
    }


async def test_no_chat_server_is_503_bus_unavailable() -> None:
    app = FastAPI()
    app.include_router(webhook_router())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.post(PATH, content=BODY, headers=signed())
    assert response.status_code == 503
    assert response.json() == {"error": "bus_unavailable", "message": "the chat server is not running"}


def test_the_openapi_schema_tags_and_documents_202() -> None:
    app = FastAPI()
    app.include_router(webhook_router())
    operation = app.openapi()["paths"]["/hooks/sessions/{session_id}/messages"]["post"]
    assert operation["tags"] == ["webhooks"] and "202" in operation["responses"]


#: Every refusal's whole answer: the `message` is part of what callers see, so it is pinned too.
ANSWERS: list[tuple[Callable[[], tuple[bytes, dict[str, str]]], int, str, str]] = [
    (lambda: (BODY, {}), 415, "unsupported_media_type", "the body must be application/json"),
    (
        lambda: (BODY, {"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
        "the body must be application/json",
    ),
    (
        lambda: (BODY, {k: v for k, v in signed().items() if k not in ("webhook-id", "webhook-signature")}),
        400,
        "missing_header",
        "missing webhook-id, webhook-signature",
    ),
    (
        lambda: (
            BODY,
            {k: v for k, v in signed().items() if k not in ("webhook-timestamp", "webhook-signature")},
        ),
        400,
        "missing_header",
        "missing webhook-timestamp, webhook-signature",
    ),
    (
        lambda: (BODY, {k: v for k, v in signed().items() if k not in ("webhook-id", "webhook-timestamp")}),
        400,
        "missing_header",
        "missing webhook-id, webhook-timestamp",
    ),
    (
        lambda: (b"x" * 70_000, signed()),
        413,
        "too_large",
        "the body must be at most 65536 bytes",
    ),
    (
        lambda: (BODY, {k: v for k, v in signed().items() if k != "webhook-timestamp"}),
        400,
        "missing_header",
        "missing webhook-timestamp",
    ),
    (
        lambda: (BODY, signed(msg_id="a b")),
        400,
        "bad_webhook_id",
        "webhook-id must be 1-256 visible ASCII characters",
    ),
    (
        lambda: (BODY, {**signed(), "webhook-timestamp": "x"}),
        400,
        "bad_timestamp",
        "webhook-timestamp must be Unix seconds",
    ),
    (
        lambda: (BODY, {**signed(), "webhook-timestamp": "1" * 12}),
        401,
        "stale_timestamp",
        "webhook-timestamp is outside the tolerance",
    ),
    (
        lambda: (BODY, {**signed(), "webhook-signature": " "}),
        400,
        "bad_signature_header",
        "webhook-signature must list 1-16 signatures",
    ),
    (
        lambda: (BODY, {**signed(), "webhook-signature": "v1"}),
        400,
        "bad_signature_header",
        "each signature must be `<version>,<base64>`",
    ),
    (
        lambda: (BODY, {**signed(), "webhook-signature": "v1,AAAA,AAAA"}),
        400,
        "bad_signature_header",
        "a v1 signature is not valid base64",
    ),
    (
        lambda: (BODY, {**signed(), "webhook-signature": "v2,AAAA"}),
        401,
        "bad_signature",
        "no v1 signature offered",
    ),
    (lambda: (BODY, signed(secret=OTHER)), 401, "bad_signature", "no signature matches"),
    (
        lambda: (BODY, {"content-type": "application/json"}),
        401,
        "missing_credentials",
        "sign the request (webhook-* headers) or send a bearer token",
    ),
    (
        lambda: (BODY, {**token(), "authorization": "Bearer x"}),
        401,
        "token_malformed",
        "the token is not a well-formed JWT",
    ),
    (
        lambda: (BODY, token(scope=None)),
        403,
        "insufficient_scope",
        "the token needs the 'sessions:send' scope",
    ),
    (
        lambda: (BODY, {**token(), "idempotency-key": " "}),
        400,
        "bad_idempotency_key",
        "Idempotency-Key must be 1-256 visible ASCII characters",
    ),
    (lambda: (b"{", signed(b"{")), 400, "malformed_body", "the body is not valid JSON"),
    (lambda: (b"[]", signed(b"[]")), 422, "invalid_message", "body: Input should be an object"),
    (
        lambda: (b'{"content": 1}', signed(b'{"content": 1}')),
        422,
        "invalid_message",
        "content: Input should be a valid string",
    ),
]


@pytest.mark.parametrize("case", range(len(ANSWERS)))
async def test_each_refusal_answers_its_documented_error_and_message(
    case: int, hooks: tuple[ChatServer, Post]
) -> None:
    _, post = hooks
    make, status, error, message = ANSWERS[case]
    body, headers = make()
    response = await post(body=body, headers=headers)
    assert (response.status_code, response.json()) == (status, {"error": error, "message": message})


async def test_404_messages(hooks: tuple[ChatServer, Post]) -> None:
    _, post = hooks
    for path, error, message in [
        ("/hooks/sessions/short/messages", "session_not_found", "no such session"),
        (
            f"/hooks/sessions/{'U' * 24}/messages",
            "session_not_found",
            "no such session (it never existed or has expired)",
        ),
        (f"/hooks/users/{'u' * 257}/messages", "user_not_found", "no such user"),
        (
            "/hooks/users/nobody/messages",
            "user_has_no_sessions",
            "the user has no live session on any replica",
        ),
    ]:
        assert (await post(path, headers=signed())).json() == {"error": error, "message": message}


async def test_conflict_messages(hooks: tuple[ChatServer, Post]) -> None:
    server, post = hooks
    headers = signed()
    assert (await post(headers=headers)).status_code == 202
    other = json.dumps({"content": "other"}).encode()
    reused = await post(body=other, headers=signed(other, msg_id=headers["webhook-id"]))
    assert reused.json() == {
        "error": "id_reused",
        "message": "this webhook id was already used with a different body",
    }
    held = signed()
    scope = hashlib.sha256(f"webhook-signer|{held['webhook-id']}".encode()).hexdigest()
    key = server.bus.keys.webhook_retry(scope)
    await server.bus.store.claim(key, msgpack.packb({"body": hashlib.sha256(BODY).hexdigest()}), 60)
    progress = await post(headers=held)
    assert progress.json() == {
        "error": "in_progress",
        "message": "a request with this webhook id is being processed",
    }


async def test_validation_details_are_cut_at_1000_characters(hooks: tuple[ChatServer, Post]) -> None:
    _, post = hooks
    body = json.dumps({"content": "x", **{f"extra{i}": i for i in range(60)}}).encode()
    response = await post(body=body, headers=signed(body))
    assert response.status_code == 422 and len(response.json()["message"]) == 1000


@pytest.mark.parametrize("overrides", [{"max_envelope_bytes": 2048}])
async def test_too_large_for_the_bus_says_why(hooks: tuple[ChatServer, Post]) -> None:
    _, post = hooks
    big = json.dumps({"content": "x" * 4000}).encode()
    answer = (await post(body=big, headers=signed(big))).json()
    assert answer["error"] == "too_large_for_the_bus" and "exceeds the limit of 2048" in answer["message"]


@pytest.mark.parametrize("overrides", [{"webhook_rate_limit": 1}])
async def test_the_rate_limit_message(hooks: tuple[ChatServer, Post]) -> None:
    _, post = hooks
    for _attempt in range(5):
        caller = token(f"service:{uuid.uuid4().hex[:8]}")
        start = time.time()
        statuses = [(await post(headers=caller)) for _ in range(2)]
        if int(start // 60) == int(time.time() // 60):
            break
    assert statuses[0].status_code == 202
    assert statuses[1].json() == {"error": "rate_limited", "message": "at most 1 requests a minute"}


# -- metadata the bus and JSON cannot carry ----------------------------------------------------------

METADATA_REFUSALS = [
    ('{"content": "x", "metadata": {"x": NaN}}', "metadata numbers must be finite (no NaN or Infinity)"),
    (
        '{"content": "x", "metadata": {"x": [Infinity]}}',
        "metadata numbers must be finite (no NaN or Infinity)",
    ),
    (
        '{"content": "x", "metadata": {"x": {"y": -Infinity}}}',
        "metadata numbers must be finite (no NaN or Infinity)",
    ),
    ('{"content": "x", "metadata": {"x": 1e999}}', "metadata numbers must be finite (no NaN or Infinity)"),
    ('{"content": "x", "metadata": {"n": 18446744073709551616}}', "metadata integers must fit in 64 bits"),
    ('{"content": "x", "metadata": {"a": [[[[[[[[1]]]]]]]]}}', "metadata nests deeper than 8 levels"),
]


@pytest.mark.parametrize(("body", "reason"), METADATA_REFUSALS)
async def test_metadata_the_bus_cannot_carry_is_422_saying_why(
    body: str, reason: str, hooks: tuple[ChatServer, Post]
) -> None:
    server, post = hooks
    response = await post(body=body.encode(), headers=signed(body.encode()))
    assert (response.status_code, response.json()) == (
        422,
        {"error": "invalid_message", "message": f"metadata: Value error, {reason}"},
    )
    assert await logged(server) == []


async def test_finite_floats_in_metadata_are_sent(hooks: tuple[ChatServer, Post]) -> None:
    server, post = hooks
    body = json.dumps({"content": "x", "metadata": {"ratio": 1.5, "list": [-0.25, 1e300]}}).encode()
    assert (await post(body=body, headers=signed(body))).status_code == 202
    ((_, envelope),) = (await server.bus.read_log(SESSION, "0-0")).entries
    assert envelope.payload["metadata"] == {"ratio": 1.5, "list": [-0.25, 1e300]}


async def test_a_deeply_nested_body_is_400_malformed_body(hooks: tuple[ChatServer, Post]) -> None:
    server, post = hooks
    body = ('{"content": "x", "metadata": {"a": ' + "[" * 30_000 + "]" * 30_000 + "}}").encode()
    response = await post(body=body, headers=signed(body))
    assert (response.status_code, response.json()) == (
        400,
        {"error": "malformed_body", "message": "the body nests too deeply"},
    )
    assert await logged(server) == []


async def test_every_validation_error_is_listed(hooks: tuple[ChatServer, Post]) -> None:
    _, post = hooks
    body = b'{"content": 1, "author": ""}'
    response = await post(body=body, headers=signed(body))
    assert response.json() == {
        "error": "invalid_message",
        "message": "content: Input should be a valid string; author: String should have at least 1 character",
    }


# -- the bus going away while a request is answered -----------------------------------------------


async def test_a_bus_that_is_unreachable_is_503_and_the_retry_is_sent_once_it_is_back(
    hooks: tuple[ChatServer, Post], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, post = hooks
    real_send = server.bus.send

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise BusUnavailable("Redis is away")

    monkeypatch.setattr(server.bus, "send", unreachable)
    headers = signed()
    response = await post(headers=headers)
    assert (response.status_code, response.json()) == (
        503,
        {"error": "bus_unavailable", "message": "the message bus is unreachable; retry later"},
    )
    monkeypatch.setattr(server.bus, "send", real_send)
    retry = await post(headers=headers)  # the claim was released: the retry is a new request
    assert retry.status_code == 202 and "idempotent-replayed" not in retry.headers
    assert await logged(server) == ["Build finished"]


async def test_a_retry_while_the_first_request_is_sending_is_409_in_progress(
    hooks: tuple[ChatServer, Post], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, post = hooks
    real_send, entered, release = server.bus.send, asyncio.Event(), asyncio.Event()

    async def slow(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await release.wait()
        return await real_send(*args, **kwargs)

    monkeypatch.setattr(server.bus, "send", slow)
    headers = signed()
    first = asyncio.create_task(post(headers=headers))
    await asyncio.wait_for(entered.wait(), 10)
    again = await post(headers=headers)  # the same id and body, while the first holds its claim
    assert (again.status_code, again.json()["error"]) == (409, "in_progress")
    release.set()
    assert (await asyncio.wait_for(first, 10)).status_code == 202
    assert await logged(server) == ["Build finished"]


# -- how long what the webhooks keep lives ------------------------------------------------------------


def ttl_of(key: str) -> float:
    entry = _hub.keys[key]
    return entry.expires_at - time.monotonic()


@pytest.mark.parametrize("overrides", [{"webhook_tolerance_seconds": 100}])
async def test_the_retry_record_lives_twice_the_tolerance(hooks: tuple[ChatServer, Post]) -> None:
    server, post = hooks
    headers = signed()
    scope = hashlib.sha256(f"webhook-signer|{headers['webhook-id']}".encode()).hexdigest()
    key = server.bus.keys.webhook_retry(scope)
    assert (await post(headers=headers)).status_code == 202
    assert 190 < ttl_of(key) <= 200
    record = msgpack.unpackb(await server.bus.store.get(key))
    assert record["body"] == hashlib.sha256(BODY).hexdigest() and record["status"] == 202


@pytest.mark.parametrize("overrides", [{"webhook_tolerance_seconds": 100}])
async def test_the_claim_of_a_request_in_flight_lives_twice_the_tolerance(
    hooks: tuple[ChatServer, Post], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, post = hooks
    headers = signed()
    scope = hashlib.sha256(f"webhook-signer|{headers['webhook-id']}".encode()).hexdigest()
    key = server.bus.keys.webhook_retry(scope)
    seen: list[tuple[float, Any]] = []

    async def look(*args: Any, **kwargs: Any) -> Any:
        seen.append((ttl_of(key), msgpack.unpackb(await server.bus.store.get(key))))
        raise BusUnavailable("stop here")

    monkeypatch.setattr(server.bus, "send", look)
    assert (await post(headers=headers)).status_code == 503
    ((ttl, claim),) = seen
    assert 190 < ttl <= 200 and claim == {"body": hashlib.sha256(BODY).hexdigest()}


class Clock:
    """Stands in for the `time` module of web/webhooks.py: the wall clock the webhooks read."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.mark.parametrize("overrides", [{"webhook_rate_limit": 1}])
async def test_the_rate_limit_window_is_the_wall_clock_minute(
    hooks: tuple[ChatServer, Post], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, post = hooks
    minute = int(time.time() // 60)
    clock = Clock(minute * 60 + 58.5)
    monkeypatch.setattr(webhooks, "time", clock)
    caller = token(f"service:{uuid.uuid4().hex[:8]}")
    assert (await post(headers=caller)).status_code == 202
    key = server.bus.keys.webhook_rate(f"token:{caller_id(caller)}", minute)
    assert 59 < ttl_of(key) <= 60  # a counter outlives its minute by less than a minute
    limited = await post(headers=caller)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    clock.now = minute * 60 + 59.9
    assert (await post(headers=caller)).headers["retry-after"] == "1"
    clock.now = (minute + 1) * 60  # the next minute: a new window
    assert (await post(headers=caller)).status_code == 202
    assert (await post(headers=caller)).headers["retry-after"] == "60"


def caller_id(headers: dict[str, str]) -> str:
    from web import verify_jwt

    return verify_jwt(headers["authorization"].removeprefix("Bearer "), Settings(auth_secret=AUTH)).identifier


async def test_a_timestamp_exactly_at_the_tolerance_is_accepted_one_second_more_is_not(
    hooks: tuple[ChatServer, Post], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, post = hooks
    now = int(time.time())
    monkeypatch.setattr(webhooks, "time", Clock(float(now)))
    for stamp, status in [(now - 300, 202), (now + 300, 202), (now - 301, 401), (now + 301, 401)]:
        assert (await post(headers=signed(stamp=stamp))).status_code == status, stamp - now


async def test_a_user_send_with_an_empty_identifier_is_404_without_touching_the_bus(
    hooks: tuple[ChatServer, Post],
) -> None:
    """No route gives `_send` an empty user id; called directly it still refuses it."""
    server, _ = hooks
    message = webhooks.WebhookMessage(content="x")
    assert await webhooks._send(server.bus, Target("user", ""), message) == (
        404,
        {"error": "user_not_found", "message": "no such user"},
    )


async def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(
    hooks: tuple[ChatServer, Post],
) -> None:
    server, post = hooks
    response = await post(headers={**signed(), "content-length": "65537"})  # the body is 46 bytes
    assert (response.status_code, response.json()["error"]) == (413, "too_large")
    assert await logged(server) == []
