"""Login callbacks, the login cookie, `on_authenticate`, and CORS, across real replicas
(tests/apps/login_app.py with tests/apps/login_chat.py) and real Socket.IO clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie

import httpx
import pytest
import socketio

from bus import Settings
from tests.harness import ChatClient, Replica, start_replica
from web import User, create_jwt

SECRET = "l" * 48
LOGIN_APP = "tests.apps.login_app:app"
EMBEDDER = "http://127.0.0.1:5173"  # an allowed origin: a page of another app that embeds the chat
API_KEY = "carol-api-key"  # as in tests/apps/login_chat.py (not imported: it would register its hooks here)
STRANGER = "http://127.0.0.1:6666"  # an origin nobody allowed


def start(redis_url: str, name: str, **env: str) -> Replica:
    base = {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_KEY_PREFIX": f"lg{uuid.uuid4().hex[:8]}",
        "SWITCHBOARD_AUTH_SECRET": SECRET,
    }
    return start_replica({**base, **env}, app=LOGIN_APP, name=name)


@pytest.fixture(scope="module")
def replica(redis_url: str) -> Iterator[Replica]:
    """A replica that lets one other origin embed the chat."""
    started = start(redis_url, "login", SWITCHBOARD_ALLOWED_ORIGINS=f"{EMBEDDER} https://app.test")
    yield started
    started.process.stop()


@pytest.fixture(scope="module")
def same_origin_replica(redis_url: str) -> Iterator[Replica]:
    """A replica with the default: same origin only."""
    started = start(redis_url, "login-default")
    yield started
    started.process.stop()


async def post(replica: Replica, route: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        return await http.post(route, **kwargs)  # type: ignore[arg-type]


def cookie_of(response: httpx.Response) -> SimpleCookie:
    cookies = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        cookies.load(header)
    return cookies


async def login(replica: Replica, username: str, password: str) -> str:
    response = await post(replica, "/chat/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return cookie_of(response)["access_token"].value


async def test_config_tells_the_page_how_to_log_in(replica: Replica) -> None:
    config = (await replica.aget("/chat/auth/config")).json()
    assert config == {"requireLogin": True, "passwordAuth": True, "headerAuth": True, "oauthProviders": []}


async def test_password_login_sets_a_locked_down_cookie_that_opens_endpoints_and_the_socket(
    replica: Replica, clients: Callable[[], ChatClient]
) -> None:
    response = await post(replica, "/chat/auth/login", json={"username": "ann", "password": "ann-password"})
    assert response.status_code == 200
    assert response.json()["user"]["identifier"] == "ann"
    cookie = cookie_of(response)["access_token"]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/" and int(cookie["max-age"]) == 15 * 24 * 3600
    assert cookie.value not in response.text  # page scripts never see the token
    assert response.headers["cache-control"] == "no-store"
    me = await replica.aget("/me", headers={"Cookie": f"access_token={cookie.value}"})
    assert me.json()["identifier"] == "ann" and me.json()["scopes"] == []
    chat = await clients().connect(replica, headers={"Cookie": f"access_token={cookie.value}"})
    said = (await replica.aget(f"/say/{chat.session_id}/hi")).json()
    assert said["user"]["identifier"] == "ann"


async def test_form_login_works_too(replica: Replica) -> None:
    form = {"username": "bob", "password": "bob-password"}
    response = await post(replica, "/chat/auth/login", data=form)
    assert response.status_code == 200 and cookie_of(response)["access_token"].value


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"json": {"username": "ann", "password": "wrong"}}, 401, "invalid_credentials"),
        ({"json": {"username": "nobody", "password": "ann-password"}}, 401, "invalid_credentials"),
        ({"json": {"username": "ann"}}, 422, "invalid_form"),
        ({"json": ["ann", "ann-password"]}, 422, "invalid_form"),
        ({"json": {"username": "", "password": "x"}}, 422, "invalid_form"),
        ({"json": {"username": "a" * 300, "password": "x"}}, 422, "invalid_form"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "malformed"),
        ({"content": b"[" * 30000, "headers": {"content-type": "application/json"}}, 413, "too_large"),
        (
            {"content": b"username=ann", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
    ],
)
async def test_refused_logins_set_no_cookie(
    kwargs: dict[str, object], status: int, error: str, replica: Replica
) -> None:
    response = await post(replica, "/chat/auth/login", **kwargs)
    assert (response.status_code, response.json()["detail"]["error"]) == (status, error)
    assert "set-cookie" not in response.headers
    assert "ann-password" not in replica.process.output()


async def test_logout_clears_the_cookie(replica: Replica) -> None:
    response = await post(replica, "/chat/auth/logout")
    cookie = cookie_of(response)["access_token"]
    assert response.json() == {"success": True}
    assert cookie.value in ("", '""') and int(cookie["max-age"]) == 0 and cookie["httponly"]


async def test_header_login_behind_an_authenticating_proxy(replica: Replica) -> None:
    proxied = {"X-Forwarded-User": "dave", "X-Forwarded-Email": "dave@example.test"}
    response = await post(replica, "/chat/auth/header", headers=proxied)
    assert response.status_code == 200
    token = cookie_of(response)["access_token"].value
    me = (await replica.aget("/me", headers={"Cookie": f"access_token={token}"})).json()
    assert me["identifier"] == "dave" and me["metadata"]["email"] == "dave@example.test"
    refused = await post(replica, "/chat/auth/header")
    assert refused.status_code == 401 and "set-cookie" not in refused.headers


async def test_on_authenticate_serves_http_and_the_socket(
    replica: Replica, clients: Callable[[], ChatClient]
) -> None:
    me = await replica.aget("/me", headers={"X-Api-Key": API_KEY})
    assert me.json()["identifier"] == "carol"
    wrong = await replica.aget("/me", headers={"X-Api-Key": "guess"})
    assert wrong.status_code == 401 and wrong.json()["detail"]["reason"] == "refused"
    # Without the hook's credentials, tokens still work.
    token = create_jwt(User("erin"), settings=Settings(auth_secret=SECRET))
    assert (await replica.aget("/me", headers={"Authorization": f"Bearer {token}"})).json()[
        "identifier"
    ] == "erin"
    chat = await clients().connect(replica, {"apiKey": API_KEY})
    said = (await replica.aget(f"/say/{chat.session_id}/hi")).json()
    assert said["user"]["identifier"] == "carol"
    by_header = await clients().connect(replica, headers={"X-Api-Key": API_KEY})
    assert (await replica.aget(f"/say/{by_header.session_id}/hi")).json()["user"]["identifier"] == "carol"
    refusal = await clients().refused(replica, {"apiKey": "guess"})
    assert refusal["data"]["reason"] == "token_refused"
    assert (await clients().refused(replica, {}))["data"]["reason"] == "token_missing"


# -- CORS and cross-site requests ------------------------------------------------------------------


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }


async def test_login_preflight_answers_allowed_origins_only(replica: Replica) -> None:
    async with httpx.AsyncClient(base_url=replica.url, timeout=10) as http:
        allowed = await http.options("/chat/auth/login", headers=preflight(EMBEDDER))
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == EMBEDDER
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert "POST" in allowed.headers["access-control-allow-methods"]
        refused = await http.options("/chat/auth/login", headers=preflight(STRANGER))
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        body = {"username": "ann", "password": "ann-password"}
        cross = await http.post("/chat/auth/login", json=body, headers={"Origin": EMBEDDER})
        assert cross.status_code == 200 and cross.headers["access-control-allow-origin"] == EMBEDDER


async def test_cross_site_login_and_logout_are_refused(
    replica: Replica, same_origin_replica: Replica
) -> None:
    """Login CSRF: a page of another site posting a form (no preflight) must not log anybody in or out."""
    body = {"username": "ann", "password": "ann-password"}
    for target in (replica, same_origin_replica):
        for route, kwargs in (("/chat/auth/login", {"data": body}), ("/chat/auth/logout", {})):
            response = await post(target, route, headers={"Origin": STRANGER}, **kwargs)
            assert response.status_code == 403, (target.process.name, route)
            assert response.json()["detail"]["error"] == "origin_not_allowed"
            assert "set-cookie" not in response.headers
        own = await post(target, "/chat/auth/login", data=body, headers={"Origin": target.url})
        assert own.status_code == 200 and "access-control-allow-origin" in own.headers


async def connect_from(replica: Replica, origin: str) -> ChatClient:
    token = create_jwt(User("ann"), settings=Settings(auth_secret=SECRET))
    return await ChatClient().connect(replica, {"token": token}, headers={"Origin": origin})


async def test_socket_accepts_an_allowed_origin_and_refuses_others(
    replica: Replica, same_origin_replica: Replica
) -> None:
    embedded = await connect_from(replica, EMBEDDER)
    own = await connect_from(replica, replica.url)
    assert embedded.session_id and own.session_id
    await embedded.close()
    await own.close()
    for target, origin in ((replica, STRANGER), (same_origin_replica, EMBEDDER)):
        refused = ChatClient()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(target, {}, headers={"Origin": origin})
        if refused.sio.eio.http is not None:
            await refused.sio.eio.http.close()
        # python-engineio logs the first refusal of each process (this test's, here).
        await asyncio.to_thread(target.process.wait_for_line, f"{origin} is not an accepted origin", 10)
    same = await connect_from(same_origin_replica, same_origin_replica.url)
    assert same.session_id
    await same.close()
