"""Webhooks on real replicas: Standard Webhooks signature vectors, tokens, idempotency, errors."""

import base64
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import msgpack
import pytest
import redis.asyncio as redis
from fastapi import FastAPI

from bus import Settings
from tests.harness import ChatClient, Replica, start_redis, start_replica
from web import User, create_jwt, webhook_router
from web.webhooks import sign

SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"x" * 32).decode()
AUTH_SECRET = "a" * 48
TOKENS = Settings(auth_secret=AUTH_SECRET)
HOOKS_PREFIX = f"wh{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def hooks_replica(redis_url: str) -> Iterator[Replica]:
    env = {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_KEY_PREFIX": HOOKS_PREFIX,
        "SWITCHBOARD_WEBHOOK_SECRETS": f"{SECRET} {OLD_SECRET}",
        "SWITCHBOARD_AUTH_SECRET": AUTH_SECRET,
        "SWITCHBOARD_REQUIRE_LOGIN": "false",
    }
    replica = start_replica(env, name="hooks")
    yield replica
    replica.process.stop()


@pytest.fixture
async def session(hooks_replica: Replica) -> AsyncIterator[ChatClient]:
    client = await ChatClient().connect(hooks_replica)
    yield client
    await client.close()


def signed(
    body: bytes, *, secret: str = SECRET, msg_id: str | None = None, stamp: int | None = None
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time()) if stamp is None else stamp
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, msg_id, stamp, body),
    }


async def post(replica: Replica, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as client:
        return await client.post(path, content=body, headers=headers)


BODY = json.dumps({"content": "Build finished", "author": "ci"}).encode()


async def test_valid_signature_delivers_and_returns_the_receipt(
    hooks_replica: Replica, session: ChatClient
) -> None:
    path = f"/hooks/sessions/{session.session_id}/messages"
    response = await post(hooks_replica, path, BODY, signed(BODY))
    assert response.status_code == 202, response.text
    receipt = response.json()
    assert receipt["target"] == {"kind": "session", "id": session.session_id}
    assert receipt["status"] == "delivered" and receipt["delivered"] == 1 and receipt["offset"]
    message = await session.next("new_message", lambda m: m["output"] == "Build finished")
    assert message["name"] == "ci" and message["offset"] == receipt["offset"]


async def test_rotated_secret_still_verifies(hooks_replica: Replica, session: ChatClient) -> None:
    path = f"/hooks/sessions/{session.session_id}/messages"
    assert (await post(hooks_replica, path, BODY, signed(BODY, secret=OLD_SECRET))).status_code == 202
    headers = signed(BODY)
    headers["webhook-signature"] += " " + sign(
        OTHER_SECRET, headers["webhook-id"], int(headers["webhook-timestamp"]), BODY
    )
    assert (await post(hooks_replica, path, BODY, headers)).status_code == 202  # any listed signature


def drop(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


def with_header(headers: dict[str, str], name: str, value: str) -> dict[str, str]:
    return {**headers, name: value}


HUGE = json.dumps({"content": "x", "metadata": {"n": 2**70}}).encode()
DEEP = json.dumps({"content": "x", "metadata": {"a": [[[[[[[[[[1]]]]]]]]]]}}).encode()

BAD_REQUESTS: dict[str, tuple[Callable[[], tuple[bytes, dict[str, str]]], int, str]] = {
    "no webhook-id": (lambda: (BODY, drop(signed(BODY), "webhook-id")), 400, "missing_header"),
    "no webhook-timestamp": (lambda: (BODY, drop(signed(BODY), "webhook-timestamp")), 400, "missing_header"),
    "no webhook-signature": (lambda: (BODY, drop(signed(BODY), "webhook-signature")), 400, "missing_header"),
    "no credentials at all": (
        lambda: (BODY, {"content-type": "application/json"}),
        401,
        "missing_credentials",
    ),
    "signature list garbage": (
        lambda: (BODY, with_header(signed(BODY), "webhook-signature", "garbage")),
        400,
        "bad_signature_header",
    ),
    "signature not base64": (
        lambda: (BODY, with_header(signed(BODY), "webhook-signature", "v1,!!!")),
        400,
        "bad_signature_header",
    ),
    "only other schemes": (
        lambda: (BODY, with_header(signed(BODY), "webhook-signature", "v1a,AAAA")),
        401,
        "bad_signature",
    ),
    "timestamp not a number": (
        lambda: (BODY, with_header(signed(BODY), "webhook-timestamp", "soon")),
        400,
        "bad_timestamp",
    ),
    "timestamp not ascii digits": (
        # "²" passes str.isdigit() but is no number; sent as the latin-1 byte servers decode it from
        lambda: (BODY, with_header(signed(BODY), "webhook-timestamp", "\u00b2".encode("latin-1"))),  # type: ignore[arg-type]
        400,
        "bad_timestamp",
    ),
    "metadata int over 64 bits": (lambda: (HUGE, signed(HUGE)), 422, "invalid_message"),
    "metadata too deep": (lambda: (DEEP, signed(DEEP)), 422, "invalid_message"),
    "bad webhook-id": (lambda: (BODY, signed(BODY, msg_id="has space")), 400, "bad_webhook_id"),
    "wrong secret": (lambda: (BODY, signed(BODY, secret=OTHER_SECRET)), 401, "bad_signature"),
    "stale timestamp": (lambda: (BODY, signed(BODY, stamp=int(time.time()) - 301)), 401, "stale_timestamp"),
    "future timestamp": (lambda: (BODY, signed(BODY, stamp=int(time.time()) + 301)), 401, "stale_timestamp"),
    "tampered body": (lambda: (BODY.replace(b"finished", b"FAILED!!"), signed(BODY)), 401, "bad_signature"),
    "not json content type": (
        lambda: (BODY, with_header(signed(BODY), "content-type", "text/plain")),
        415,
        "unsupported_media_type",
    ),
    "body not json": (lambda: (b"{nope", signed(b"{nope")), 400, "malformed_body"),
    "schema: no content": (lambda: (b"{}", signed(b"{}")), 422, "invalid_message"),
    "schema: extra field": (
        lambda: (b'{"content": "x", "x": 1}', signed(b'{"content": "x", "x": 1}')),
        422,
        "invalid_message",
    ),
    "schema: reserved event": (
        lambda: (b'{"content": "x", "event": "ask"}', signed(b'{"content": "x", "event": "ask"}')),
        422,
        "invalid_message",
    ),
    "too large": (lambda: (b'{"content": "' + b"x" * 70_000 + b'"}', signed(b"{}")), 413, "too_large"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
async def test_bad_requests_get_a_precise_error_and_send_nothing(
    case: str, hooks_replica: Replica, session: ChatClient
) -> None:
    make, status, error = BAD_REQUESTS[case]
    body, headers = make()
    response = await post(hooks_replica, f"/hooks/sessions/{session.session_id}/messages", body, headers)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    # Nothing was sent: a follow-up with a body of its own is the only message the session sees. It
    # is published after anything the refused request could have sent, so once it has arrived,
    # a message sent by the refused request would have arrived before it.
    after = json.dumps({"content": f"after: {case}"}).encode()
    ok = await post(hooks_replica, f"/hooks/sessions/{session.session_id}/messages", after, signed(after))
    assert ok.status_code == 202
    await session.next("new_message", lambda m: m["output"] == f"after: {case}")
    assert session.outputs() == [f"after: {case}"]


async def test_replay_inside_the_window_gets_the_same_response_and_sends_nothing(
    hooks_replica: Replica, session: ChatClient
) -> None:
    path = f"/hooks/sessions/{session.session_id}/messages"
    headers = signed(BODY)
    first = await post(hooks_replica, path, BODY, headers)
    again = await post(hooks_replica, path, BODY, headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = json.dumps({"content": "different"}).encode()
    reused = {**signed(other, msg_id=headers["webhook-id"])}
    conflict = await post(hooks_replica, path, other, reused)
    assert conflict.status_code == 409 and conflict.json()["error"] == "id_reused"
    marker = json.dumps({"content": "marker"}).encode()
    assert (await post(hooks_replica, path, marker, signed(marker))).status_code == 202
    await session.next("new_message", lambda m: m["output"] == "marker")
    assert session.outputs() == ["Build finished", "marker"]


async def test_service_tokens_scopes_and_idempotency_keys(
    hooks_replica: Replica, session: ChatClient
) -> None:
    path = f"/hooks/sessions/{session.session_id}/messages"
    service = create_jwt(User("service:ci"), settings=TOKENS, scope="sessions:send")
    user_token = create_jwt(User("ann"), settings=TOKENS)
    json_type = {"content-type": "application/json"}
    headers = {**json_type, "authorization": f"Bearer {service}", "idempotency-key": "job-17"}
    first = await post(hooks_replica, path, BODY, headers)
    assert first.status_code == 202
    assert (await post(hooks_replica, path, BODY, headers)).json() == first.json()
    forbidden = await post(hooks_replica, path, BODY, {**json_type, "authorization": f"Bearer {user_token}"})
    assert forbidden.status_code == 403 and forbidden.json()["error"] == "insufficient_scope"
    bad = await post(hooks_replica, path, BODY, {**json_type, "authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"].startswith("Bearer")
    await session.next("new_message")
    assert len(session.received("new_message")) == 1


async def test_unknown_targets_are_404_and_say_which(hooks_replica: Replica) -> None:
    for path, error in [
        (f"/hooks/sessions/{'U' * 24}/messages", "session_not_found"),
        ("/hooks/sessions/not-an-id!/messages", "session_not_found"),
        ("/hooks/users/nobody/messages", "user_has_no_sessions"),
    ]:
        response = await post(hooks_replica, path, BODY, signed(BODY))
        assert response.status_code == 404 and response.json()["error"] == error


async def test_custom_events_and_broadcast(hooks_replica: Replica, session: ChatClient) -> None:
    body = json.dumps({"content": "42%", "event": "progress", "metadata": {"job": 7}}).encode()
    response = await post(hooks_replica, f"/hooks/sessions/{session.session_id}/messages", body, signed(body))
    assert response.status_code == 202
    event = await session.next("progress")
    assert event["content"] == "42%" and event["metadata"] == {"job": 7} and event["offset"]
    everyone = await post(hooks_replica, "/hooks/broadcast", BODY, signed(BODY))
    assert everyone.status_code == 202 and everyone.json()["target"] == {"kind": "broadcast", "id": ""}
    await session.next("new_message", lambda m: m["output"] == "Build finished")


def service_token(identifier: str) -> dict[str, str]:
    token = create_jwt(User(identifier), settings=TOKENS, scope="sessions:send")
    return {"content-type": "application/json", "authorization": f"Bearer {token}"}


async def test_rate_limit_per_caller_replays_are_free_and_retry_after_names_the_next_minute(
    redis_url: str, prefix: str
) -> None:
    env = {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_KEY_PREFIX": prefix,
        "SWITCHBOARD_AUTH_SECRET": AUTH_SECRET,
        "SWITCHBOARD_WEBHOOK_RATE_LIMIT": "2",
    }
    replica = start_replica(env, name="rate-limited")
    try:
        # Windows are fixed Unix minutes: a burst that straddles a minute boundary proves nothing, so
        # it is run again (as a new caller, with counters of its own) until one fits in a minute.
        for _attempt in range(5):
            caller = service_token(f"service:rl-{uuid.uuid4().hex[:8]}")
            start = time.time()
            first = await post(replica, "/hooks/broadcast", BODY, {**caller, "idempotency-key": "k1"})
            replay = await post(replica, "/hooks/broadcast", BODY, {**caller, "idempotency-key": "k1"})
            second = await post(replica, "/hooks/broadcast", BODY, {**caller, "idempotency-key": "k2"})
            before_limited = time.time()
            limited = await post(replica, "/hooks/broadcast", BODY, {**caller, "idempotency-key": "k3"})
            after_limited = time.time()
            replay_over = await post(replica, "/hooks/broadcast", BODY, {**caller, "idempotency-key": "k1"})
            other = await post(
                replica, "/hooks/broadcast", BODY, service_token(f"service:other-{uuid.uuid4().hex[:8]}")
            )
            if int(start // 60) == int(time.time() // 60):
                break
        else:
            raise AssertionError("5 bursts in a row straddled a minute boundary: is the clock jumping?")
        assert [r.status_code for r in (first, replay, second, limited)] == [202, 202, 202, 429]
        # A replay is answered from the stored response and does not count, also over the limit.
        assert replay.headers["idempotent-replayed"] == "true" and replay.json() == first.json()
        assert replay_over.status_code == 202 and replay_over.headers["idempotent-replayed"] == "true"
        assert other.status_code == 202  # the limit is per caller
        assert limited.json()["error"] == "rate_limited"
        # Retry-After: the seconds from the request to the start of the next Unix minute.
        retry_after = int(limited.headers["retry-after"])
        assert 60 - int(after_limited) % 60 <= retry_after <= 60 - int(before_limited) % 60
        # A refused request stores nothing: k3 is a new request once the window allows it.
        refused_again = await post(replica, "/hooks/broadcast", BODY, {**caller, "idempotency-key": "k3"})
        assert refused_again.status_code == 429 or int(start // 60) != int(time.time() // 60)
        assert "idempotent-replayed" not in refused_again.headers
    finally:
        replica.process.stop()


def test_openapi_documents_the_webhooks(hooks_replica: Replica) -> None:
    schema = hooks_replica.get("/openapi.json").json()
    operation = schema["paths"]["/hooks/sessions/{session_id}/messages"]["post"]
    assert {"202", "400", "401", "403", "404", "409", "413", "415", "429"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]
    assert body["example"]["content"] and "content" in body["schema"]["properties"]
    assert {p["name"] for p in operation["parameters"]} >= {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }


# -- documented promises: one test each (docs/webhooks.md) ----------------------------------------


@pytest.fixture(scope="module")
def strict_replica(redis_url: str) -> Iterator[Replica]:
    """No webhook secrets, login required, and a bus limit below the webhook body limit."""
    env = {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_KEY_PREFIX": f"ws{uuid.uuid4().hex[:8]}",
        "SWITCHBOARD_AUTH_SECRET": AUTH_SECRET,
        "SWITCHBOARD_MAX_ENVELOPE_BYTES": "4096",
    }
    replica = start_replica(env, name="strict")
    yield replica
    replica.process.stop()


async def test_signed_request_without_configured_secrets_is_401_signatures_not_configured(
    strict_replica: Replica,
) -> None:
    response = await post(strict_replica, "/hooks/broadcast", BODY, signed(BODY))
    assert response.status_code == 401 and response.json()["error"] == "signatures_not_configured"


async def test_message_too_large_for_the_bus_is_413_and_nothing_is_sent(strict_replica: Replica) -> None:
    ann = await ChatClient().connect(strict_replica, {"token": create_jwt(User("ann"), settings=TOKENS)})
    try:
        path = f"/hooks/sessions/{ann.session_id}/messages"
        big = json.dumps(
            {"content": "x" * 8000}
        ).encode()  # under the 64 KiB body limit, over the bus's 4 KiB
        caller = service_token("service:big")
        response = await post(strict_replica, path, big, {**caller, "idempotency-key": "big-1"})
        assert response.status_code == 413 and response.json()["error"] == "too_large_for_the_bus"
        # Nothing was stored for the retry key either: a retry is refused the same way, not replayed.
        retry = await post(strict_replica, path, big, {**caller, "idempotency-key": "big-1"})
        assert retry.status_code == 413 and "idempotent-replayed" not in retry.headers
        marker = json.dumps({"content": "marker"}).encode()
        assert (await post(strict_replica, path, marker, caller)).status_code == 202
        await ann.next("new_message", lambda m: m["output"] == "marker")
        assert ann.outputs() == ["marker"]
    finally:
        await ann.close()


async def test_a_user_send_reaches_each_live_session_of_that_user_without_an_offset(
    strict_replica: Replica,
) -> None:
    ann = [
        await ChatClient().connect(strict_replica, {"token": create_jwt(User("ann"), settings=TOKENS)})
        for _ in range(2)
    ]
    bob = await ChatClient().connect(strict_replica, {"token": create_jwt(User("bob"), settings=TOKENS)})
    try:
        body = json.dumps({"content": "for ann", "author": "ci"}).encode()
        response = await post(strict_replica, "/hooks/users/ann/messages", body, service_token("service:ci"))
        assert response.status_code == 202, response.text
        receipt = response.json()
        assert receipt["target"] == {"kind": "user", "id": "ann"} and receipt["offset"] == ""
        assert receipt["status"] == "delivered" and receipt["delivered"] == 1  # one replica, two sockets
        for client in ann:
            message = await client.next("new_message", lambda m: m["output"] == "for ann")
            assert message["name"] == "ci" and "offset" not in message
        marker = json.dumps({"content": "marker"}).encode()
        to_bob = f"/hooks/sessions/{bob.session_id}/messages"
        assert (await post(strict_replica, to_bob, marker, service_token("service:ci"))).status_code == 202
        await bob.next("new_message", lambda m: m["output"] == "marker")
        assert bob.outputs() == ["marker"]
    finally:
        for client in [*ann, bob]:
            await client.close()


async def test_user_identifier_over_256_characters_is_404_user_not_found(hooks_replica: Replica) -> None:
    for identifier, error in [("u" * 257, "user_not_found"), ("u" * 256, "user_has_no_sessions")]:
        response = await post(hooks_replica, f"/hooks/users/{identifier}/messages", BODY, signed(BODY))
        assert response.status_code == 404 and response.json()["error"] == error, identifier


@pytest.mark.parametrize("key", ["has space", "", "x" * 257, "caf\u00e9"])
async def test_bad_idempotency_key_is_400(hooks_replica: Replica, session: ChatClient, key: str) -> None:
    headers = {**service_token("service:ci"), "idempotency-key": key.encode()}  # bytes: sent as UTF-8
    path = f"/hooks/sessions/{session.session_id}/messages"
    response = await post(hooks_replica, path, BODY, headers)  # type: ignore[arg-type]
    assert response.status_code == 400 and response.json()["error"] == "bad_idempotency_key"
    good = await post(hooks_replica, path, BODY, {**headers, "idempotency-key": "x" * 256})  # type: ignore[dict-item]
    assert good.status_code == 202


async def test_a_retry_key_still_being_processed_is_409_in_progress(
    hooks_replica: Replica, session: ChatClient, redis_url: str
) -> None:
    headers = signed(BODY)
    # The record a first request holds while its send runs (docs/configuration.md, webhook idempotency).
    scope = hashlib.sha256(f"webhook-signer|{headers['webhook-id']}".encode()).hexdigest()
    admin = redis.Redis.from_url(redis_url)
    await admin.set(
        f"{HOOKS_PREFIX}:webhook:{{{scope}}}", msgpack.packb({"body": hashlib.sha256(BODY).hexdigest()})
    )
    await admin.aclose()
    path = f"/hooks/sessions/{session.session_id}/messages"
    response = await post(hooks_replica, path, BODY, headers)
    assert response.status_code == 409 and response.json()["error"] == "in_progress"
    other = json.dumps({"content": "other"}).encode()
    reused = await post(hooks_replica, path, other, signed(other, msg_id=headers["webhook-id"]))
    assert reused.status_code == 409 and reused.json()["error"] == "id_reused"  # the body decides first


async def test_a_retry_re_signed_with_the_rotated_secret_is_a_replay(
    hooks_replica: Replica, session: ChatClient
) -> None:
    path = f"/hooks/sessions/{session.session_id}/messages"
    msg_id = f"msg_{uuid.uuid4().hex}"
    first = await post(hooks_replica, path, BODY, signed(BODY, secret=OLD_SECRET, msg_id=msg_id))
    # The sender moved to the new secret meanwhile and re-signs the retry, with a new timestamp.
    retry = await post(hooks_replica, path, BODY, signed(BODY, msg_id=msg_id, stamp=int(time.time()) + 1))
    assert first.status_code == retry.status_code == 202
    assert retry.headers["idempotent-replayed"] == "true" and retry.json() == first.json()
    marker = json.dumps({"content": "marker"}).encode()
    assert (await post(hooks_replica, path, marker, signed(marker))).status_code == 202
    await session.next("new_message", lambda m: m["output"] == "marker")
    assert session.outputs() == ["Build finished", "marker"]


async def test_stored_404s_are_replayed(hooks_replica: Replica) -> None:
    for path, error in [
        ("/hooks/users/nobody/messages", "user_has_no_sessions"),
        (f"/hooks/sessions/{'U' * 24}/messages", "session_not_found"),
        (f"/hooks/users/{'u' * 257}/messages", "user_not_found"),
    ]:
        headers = signed(BODY)
        first = await post(hooks_replica, path, BODY, headers)
        again = await post(hooks_replica, path, BODY, headers)
        assert first.status_code == again.status_code == 404 and first.json()["error"] == error
        assert "idempotent-replayed" not in first.headers
        assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()


async def test_no_chat_server_in_the_process_is_503_bus_unavailable() -> None:
    app = FastAPI()  # the webhook router without mount_app: no bus to send with
    app.include_router(webhook_router())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.post("/hooks/broadcast", content=BODY, headers=signed(BODY))
    assert response.status_code == 503
    assert response.json() == {"error": "bus_unavailable", "message": "the chat server is not running"}


async def test_unreachable_redis_is_503_bus_unavailable_and_a_retry_can_send() -> None:
    proc, port = start_redis()
    env = {
        "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "SWITCHBOARD_WEBHOOK_SECRETS": SECRET,
    }
    replica = start_replica(env, name="redis-gone")
    try:
        proc.stop()  # our own redis-server: the replica loses its bus
        response = await post(replica, "/hooks/broadcast", BODY, signed(BODY))
        assert response.status_code == 503
        assert response.json()["error"] == "bus_unavailable" and "retry later" in response.json()["message"]
    finally:
        replica.process.stop()
        proc.stop()
