"""Auth across real replicas: tokens on the socket handshake, sessions bound to their user."""

from collections.abc import Callable

import pytest

from bus import Settings
from tests.harness import ChatClient, Replica
from web import User, create_jwt

SECRET = "k" * 48
SETTINGS = Settings(auth_secret=SECRET)


def token(identifier: str, **kwargs: object) -> str:
    return create_jwt(User(identifier), settings=SETTINGS, **kwargs)  # type: ignore[arg-type]


def bearer(identifier: str, **kwargs: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(identifier, **kwargs)}"}


@pytest.fixture
def auth_replicas(replicas: Callable[..., Replica]) -> Callable[[], Replica]:
    return lambda: replicas(env={"SWITCHBOARD_AUTH_SECRET": SECRET})


async def test_bearer_token_in_auth_and_cookie_both_open_the_socket(
    auth_replicas: Callable[[], Replica], clients: Callable[[], ChatClient]
) -> None:
    a = auth_replicas()
    by_auth = await clients().start(a, {"token": token("ann")})
    await by_auth.next("new_message", lambda m: m["output"].startswith("started"))
    by_cookie = await clients().connect(a, headers={"Cookie": f"access_token={token('bob')}"})
    said = (await a.aget(f"/say/{by_cookie.session_id}/hi")).json()
    assert said["user"]["identifier"] == "bob"
    assert (await a.aget(f"/say/{by_auth.session_id}/hi")).json()["user"]["identifier"] == "ann"


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        ({}, "token_missing"),
        ({"token": "garbage"}, "token_malformed"),
        ({"token": create_jwt(User("ann"), -60, settings=SETTINGS)}, "token_expired"),
        ({"token": create_jwt(User("ann"), settings=Settings(auth_secret="z" * 48))}, "token_unknown_key"),
    ],
)
async def test_refused_connections_say_why(
    auth: dict[str, str], reason: str, auth_replicas: Callable[[], Replica], clients: Callable[[], ChatClient]
) -> None:
    refusal = await clients().refused(auth_replicas(), auth)
    assert refusal["data"]["reason"] == reason and refusal["message"]


async def test_resuming_another_users_session_is_refused_even_with_its_token(
    auth_replicas: Callable[[], Replica], clients: Callable[[], ChatClient]
) -> None:
    a, b = auth_replicas(), auth_replicas()
    ann = await clients().connect(a, {"token": token("ann")})
    stolen = {"token": token("mallory"), "sessionId": ann.session_id, "resumeToken": ann.resume_token}
    refusal = await clients().refused(b, stolen)
    assert refusal["data"]["reason"] == "session_of_another_user"
    assert not ann.received("session_replaced")
    again = await clients().connect(
        b, {"token": token("ann"), "sessionId": ann.session_id, "resumeToken": ann.resume_token}
    )
    assert again.session_id == ann.session_id


@pytest.mark.parametrize("route", ["/hello-as", "/hello-as-plain"])
async def test_cross_replica_sends_are_authorized_per_user(
    route: str, auth_replicas: Callable[[], Replica], clients: Callable[[], ChatClient]
) -> None:
    a, b = auth_replicas(), auth_replicas()
    ann = await clients().connect(a, {"token": token("ann")})
    assert (await a.aget(f"{route}/{ann.session_id}", headers=bearer("bob"))).status_code == 403
    forbidden = await b.aget(f"{route}/{ann.session_id}", headers=bearer("bob"))
    assert forbidden.status_code == 403
    assert forbidden.json() == {"detail": "not allowed to send to this session", "sessionId": ann.session_id}
    assert (await b.aget(f"{route}/{ann.session_id}", headers=bearer("ann"))).status_code == 200
    await ann.next("new_message", lambda m: m["output"] == "Hello from ann")
    service = bearer("service:billing", scope="sessions:send")
    assert (await b.aget(f"{route}/{ann.session_id}", headers=service)).status_code == 200
    await ann.next("new_message", lambda m: m["output"] == "Hello from service:billing")
    assert not [m for m in ann.received("new_message") if "bob" in m["output"]]
    assert (await b.aget(f"{route}/{'U' * 24}", headers=bearer("bob"))).status_code == 404
    assert (await b.aget(f"{route}/{ann.session_id}")).status_code == 401


async def test_custom_keys_on_behalf_of_a_user_called_plainly_are_checked_too(
    auth_replicas: Callable[[], Replica], clients: Callable[[], ChatClient]
) -> None:
    a = auth_replicas()
    ann = await clients().start(a, {"token": token("ann")})
    await ann.next("new_message", lambda m: m["output"].startswith("started"))
    # On the replica holding ann's session, bob may neither read nor write her keys.
    forbidden = await a.aget(f"/count-as-plain/{ann.session_id}", headers=bearer("bob"))
    assert forbidden.status_code == 403
    assert forbidden.json() == {"detail": "not allowed to send to this session", "sessionId": ann.session_id}
    own = await a.aget(f"/count-as-plain/{ann.session_id}", headers=bearer("ann"))
    assert own.status_code == 200 and own.json() == {"count": 0, "held": True}


async def test_seed_auth_example_with_a_token_minted_in_another_process(
    auth_replicas: Callable[[], Replica],
) -> None:
    a = auth_replicas()
    response = await a.aget("/custom-auth", headers=bearer("USERNAME"))
    assert response.status_code == 200 and response.json() == {"identifier": "USERNAME"}
    missing = await a.aget("/custom-auth")
    assert missing.status_code == 401 and missing.json()["detail"]["reason"] == "missing"
