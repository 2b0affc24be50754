"""Identity-provider tokens across real replicas: keys generated here, the JWKS document served by a real
HTTP server on 127.0.0.1, tokens on an endpoint protected by authenticate_user and on the socket handshake,
and the provider rotating its key while the replica runs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from bus import Settings
from tests.harness import ChatClient, Replica, start_replica
from tests.idp import IdentityProvider, SigningKey, idp_claims, new_key
from tests.test_jwks import hs256_with_public_key
from web import User, create_jwt

SECRET = "j" * 48
RSA, EC = new_key("RS256"), new_key("ES256")


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider(RSA, EC).start()
    yield provider
    provider.stop()


def start(redis_url: str, idp: IdentityProvider, name: str, app: str, **env: str) -> Replica:
    base = {"SWITCHBOARD_REDIS_URL": redis_url, "SWITCHBOARD_KEY_PREFIX": f"jw{uuid.uuid4().hex[:8]}"}
    return start_replica({**base, **idp.env(**env)}, app=app, name=name)


@pytest.fixture(scope="module")
def provider_only(redis_url: str, idp: IdentityProvider) -> Iterator[Replica]:
    """Tokens from the identity provider only (no HS256 secret), on the seed app."""
    started = start(redis_url, idp, "jwks-only", "tests.apps.app:app")
    yield started
    started.process.stop()


@pytest.fixture(scope="module")
def side_by_side(redis_url: str, idp: IdentityProvider) -> Iterator[Replica]:
    """The provider's tokens and our own HS256 ones (and the login app's callbacks)."""
    started = start(
        redis_url, idp, "jwks-and-secret", "tests.apps.login_app:app", SWITCHBOARD_AUTH_SECRET=SECRET
    )
    yield started
    started.process.stop()


@pytest.mark.parametrize("key", [RSA, EC], ids=["RS256", "ES256"])
async def test_provider_tokens_open_endpoints_and_the_socket(
    key: SigningKey, provider_only: Replica, side_by_side: Replica, clients: Callable[[], ChatClient]
) -> None:
    token = key.sign(idp_claims())
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await provider_only.aget("/custom-auth", headers=bearer)).json() == {"identifier": "auth0|ann"}
    assert (await side_by_side.aget("/me", headers=bearer)).json()["display_name"] == "Ann"
    for replica in (provider_only, side_by_side):
        chat = await clients().connect(replica, {"token": token})
        said = (await replica.aget(f"/say/{chat.session_id}/hi")).json()
        assert said["user"]["identifier"] == "auth0|ann"
    ours = create_jwt(User("bob"), settings=Settings(auth_secret=SECRET))
    chat = await clients().connect(side_by_side, {"token": ours})
    assert (await side_by_side.aget(f"/say/{chat.session_id}/hi")).json()["user"]["identifier"] == "bob"


ATTACKS = {
    "wrong issuer": (lambda: RSA.sign(idp_claims(iss="https://evil.test/")), "wrong_issuer"),
    "wrong audience": (lambda: RSA.sign(idp_claims(aud="another-api")), "wrong_audience"),
    "HS256 with the public key as secret": (lambda: hs256_with_public_key(RSA), "bad_algorithm"),
    "expired": (lambda: EC.sign(idp_claims(exp=int(time.time()) - 60)), "expired"),
    "unknown kid": (lambda: new_key("ES256", "made-up").sign(idp_claims()), "unknown_key"),
    "our HS256 token where no secret is set": (
        lambda: create_jwt(User("ann"), settings=Settings(auth_secret=SECRET)),
        "bad_algorithm",
    ),
}


@pytest.mark.parametrize("attack", ATTACKS)
async def test_bad_provider_tokens_are_refused_on_both_paths(
    attack: str, provider_only: Replica, clients: Callable[[], ChatClient]
) -> None:
    make, reason = ATTACKS[attack]
    token = make()
    refusal = await clients().refused(provider_only, {"token": token})
    assert refusal["data"]["reason"] == f"token_{reason}"
    response = await provider_only.aget("/custom-auth", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401 and response.json()["detail"]["reason"] == reason
    assert token not in provider_only.process.output()


async def test_the_provider_rotates_its_key_without_a_restart(
    redis_url: str, clients: Callable[[], ChatClient]
) -> None:
    interval = 1.0
    provider = IdentityProvider(RSA).start()
    replica = start(
        redis_url, provider, "jwks-rotation", "tests.apps.app:app", SWITCHBOARD_AUTH_JWKS_REFRESH_SECONDS="1"
    )
    try:
        await clients().connect(replica, {"token": RSA.sign(idp_claims())})
        assert provider.fetches == 1
        rotated = new_key("ES256", "rotated-1")
        provider.keys = [rotated]
        # A flood of handshakes with made-up kids: refused, and they cannot make the replica hammer the
        # provider: fetches stay at least one interval apart.
        made_up = [SigningKey(f"made-up-{i}", "ES256", rotated.private) for i in range(30)]
        refusals = await asyncio.gather(
            *(clients().refused(replica, {"token": k.sign(idp_claims())}) for k in made_up)
        )
        assert {r["data"]["reason"] for r in refusals} == {"token_unknown_key"}
        gaps = [b - a for a, b in zip(provider.fetch_times, provider.fetch_times[1:], strict=False)]
        assert all(gap >= interval - 0.05 for gap in gaps), gaps
        # Once an interval has passed since the last fetch, the new key is accepted after one refresh.
        await asyncio.sleep(max(0.0, provider.fetch_times[-1] + interval - time.monotonic()))
        before = provider.fetches
        chat = await clients().connect(replica, {"token": rotated.sign(idp_claims(sub="auth0|bob"))})
        assert (await replica.aget(f"/say/{chat.session_id}/hi")).json()["user"]["identifier"] == "auth0|bob"
        assert provider.fetches == before + 1
        # The key the provider stopped publishing is refused, without another fetch.
        refusal = await clients().refused(replica, {"token": RSA.sign(idp_claims())})
        assert refusal["data"]["reason"] == "token_unknown_key"
        assert provider.fetches == before + 1
    finally:
        replica.process.stop()
        provider.stop()
