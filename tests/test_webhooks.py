"""Webhooks on real replicas: Standard Webhooks signature vectors, tokens, idempotency, errors."""

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from bus import Settings
from tests.harness import ChatClient, Replica, start_replica
from web import User, create_jwt
from web.webhooks import sign

SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"x" * 32).decode()
AUTH_SECRET = "a" * 48
TOKENS = Settings(auth_secret=AUTH_SECRET)


@pytest.fixture(scope="module")
def hooks_replica(redis_url: str) -> Iterator[Replica]:
    env = {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_KEY_PREFIX": f"wh{uuid.uuid4().hex[:8]}",
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
    # Nothing was sent: the next valid request is the first message the session sees.
    ok = await post(hooks_replica, f"/hooks/sessions/{session.session_id}/messages", BODY, signed(BODY))
    assert ok.status_code == 202
    await session.next("new_message")
    assert len(session.received("new_message")) == 1


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


async def test_rate_limit_per_caller(redis_url: str, prefix: str) -> None:
    env = {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_KEY_PREFIX": prefix,
        "SWITCHBOARD_WEBHOOK_SECRETS": SECRET,
        "SWITCHBOARD_WEBHOOK_RATE_LIMIT": "2",
    }
    replica = start_replica(env, name="rate-limited")
    try:
        statuses = [(await post(replica, "/hooks/broadcast", BODY, signed(BODY))) for _ in range(3)]
        assert [r.status_code for r in statuses] == [202, 202, 429]
        assert statuses[2].json()["error"] == "rate_limited" and int(statuses[2].headers["retry-after"]) <= 60
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
