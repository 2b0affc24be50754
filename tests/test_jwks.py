"""Identity-provider tokens (JWKS), in process: keys generated here, the JWKS document served by a real
HTTP server on 127.0.0.1 (tests/idp.py). Across real replicas: tests/test_jwks_replicas.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from bus import Settings
from tests.idp import AUDIENCE, ISSUER, IdentityProvider, SigningKey, idp_claims, new_key
from web import AuthError, User, create_jwt, verify_jwt
from web.auth import verify_token
from web.jwks import JwksKeys

SECRET = "s" * 40
RSA, EC, ED = new_key("RS256", "rsa-1"), new_key("ES256", "ec-1"), new_key("EdDSA", "ed-1")


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider(RSA, EC, ED).start()
    yield provider
    provider.stop()


def settings_for(idp: IdentityProvider, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "auth_jwks_url": idp.url,
        "auth_jwks_issuer": ISSUER,
        "auth_jwks_audience": (AUDIENCE,),
        **changes,
    }
    return Settings(**values)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key(key: SigningKey) -> str:
    """The algorithm-confusion attack: an HS256 token whose HMAC secret is the provider's public key
    (which anybody can download), with the provider's `kid`."""
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    body = b64(json.dumps(idp_claims(sub="root")).encode())
    mac = hmac.new(pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(mac)}"


def unsigned(key: SigningKey) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": key.kid}).encode())
    return f"{header}.{b64(json.dumps(idp_claims()).encode())}."


def tampered(key: SigningKey) -> str:
    header, _, signature = key.sign(idp_claims()).split(".")
    return f"{header}.{b64(json.dumps(idp_claims(sub='root')).encode())}.{signature}"


async def refusal(token: str, settings: Settings) -> str:
    with pytest.raises(AuthError) as raised:
        await verify_token(token, settings)
    assert token not in str(raised.value)
    return raised.value.reason


@pytest.mark.parametrize("key", [RSA, EC, ED], ids=["RS256", "ES256", "EdDSA"])
async def test_provider_tokens_verify_with_each_algorithm(key: SigningKey, idp: IdentityProvider) -> None:
    user = await verify_token(key.sign(idp_claims()), settings_for(idp))
    assert (user.identifier, user.display_name, user.scopes) == ("auth0|ann", "Ann", ())


async def test_a_token_for_one_of_several_audiences_verifies(idp: IdentityProvider) -> None:
    settings = settings_for(idp, auth_jwks_audience=("other-api", AUDIENCE))
    assert (await verify_token(RSA.sign(idp_claims(aud=[AUDIENCE, "x"])), settings)).identifier == "auth0|ann"


ATTACKS: dict[str, tuple[Any, str]] = {
    "wrong issuer": (lambda: RSA.sign(idp_claims(iss="https://evil.test/")), "wrong_issuer"),
    "no issuer": (lambda: RSA.sign(idp_claims(iss=None)), "missing_claim"),
    "wrong audience": (lambda: RSA.sign(idp_claims(aud="another-api")), "wrong_audience"),
    "no audience": (lambda: RSA.sign(idp_claims(aud=None)), "missing_claim"),
    "expired": (lambda: EC.sign(idp_claims(exp=int(time.time()) - 60)), "expired"),
    "not yet valid": (lambda: EC.sign(idp_claims(nbf=int(time.time()) + 3600)), "not_yet_valid"),
    "no exp": (lambda: RSA.sign(idp_claims(exp=None)), "missing_claim"),
    "no sub": (lambda: RSA.sign(idp_claims(sub=None)), "missing_claim"),
    "unknown kid": (lambda: new_key("RS256", "made-up").sign(idp_claims()), "unknown_key"),
    "no kid": (lambda: jwt.encode(idp_claims(), RSA.private, algorithm="RS256"), "unknown_key"),
    "another key with the provider's kid": (
        lambda: new_key("RS256", RSA.kid).sign(idp_claims()),
        "bad_signature",
    ),
    "tampered payload": (lambda: tampered(RSA), "bad_signature"),
    "HS256 with the public key as secret": (lambda: hs256_with_public_key(RSA), "bad_algorithm"),
    "alg none": (lambda: unsigned(RSA), "bad_algorithm"),
    "RS256 header on the EC key's kid": (
        lambda: SigningKey(EC.kid, "RS256", RSA.private).sign(idp_claims()),
        "bad_algorithm",
    ),
    "ES256 key used as EdDSA": (
        lambda: SigningKey(EC.kid, "EdDSA", ED.private).sign(idp_claims()),
        "bad_algorithm",
    ),
}


@pytest.mark.parametrize("attack", ATTACKS)
async def test_every_bad_provider_token_names_its_failure(attack: str, idp: IdentityProvider) -> None:
    make, reason = ATTACKS[attack]
    assert await refusal(make(), settings_for(idp)) == reason


async def test_an_algorithm_left_out_of_the_allowed_list_is_refused(idp: IdentityProvider) -> None:
    only_ec = settings_for(idp, auth_jwks_algorithms=("ES256",))
    assert await refusal(RSA.sign(idp_claims()), only_ec) == "bad_algorithm"
    assert (await verify_token(EC.sign(idp_claims()), only_ec)).identifier == "auth0|ann"


async def test_our_tokens_and_the_providers_work_side_by_side(idp: IdentityProvider) -> None:
    both = settings_for(idp, auth_secret=SECRET)
    ours = create_jwt(User("bob"), settings=both)
    assert (await verify_token(ours, both)).identifier == "bob"
    assert verify_jwt(ours, both).identifier == "bob"
    assert (await verify_token(RSA.sign(idp_claims()), both)).identifier == "auth0|ann"
    # With a secret configured, the confused token goes to our HS256 path and finds no such kid there.
    assert await refusal(hs256_with_public_key(RSA), both) == "unknown_key"
    # The sync verify_jwt checks our tokens only: a provider's is refused, never half-checked.
    with pytest.raises(AuthError) as raised:
        verify_jwt(RSA.sign(idp_claims()), both)
    assert raised.value.reason == "bad_algorithm"
    # Our own HS256 tokens are refused where only the provider is configured (no secret to check them).
    assert await refusal(ours, settings_for(idp)) == "bad_algorithm"


async def test_an_unreachable_provider_is_keys_unavailable(idp: IdentityProvider) -> None:
    idp.status = 500
    assert await refusal(RSA.sign(idp_claims()), settings_for(idp)) == "keys_unavailable"


async def test_a_provider_serving_garbage_is_keys_unavailable(idp: IdentityProvider) -> None:
    idp.body = b"<html>not a key set</html>"
    assert await refusal(RSA.sign(idp_claims()), settings_for(idp)) == "keys_unavailable"


async def test_nothing_configured_is_not_configured() -> None:
    assert await refusal(RSA.sign(idp_claims()), Settings()) == "not_configured"


async def test_fetches_run_off_the_event_loop_and_are_shared(idp: IdentityProvider) -> None:
    """While the provider holds the request, the event loop keeps running, and concurrent lookups
    share the one fetch in flight."""
    settings = settings_for(idp)
    idp.hold.clear()
    lookups = [asyncio.create_task(verify_token(key.sign(idp_claims()), settings)) for key in (RSA, EC, ED)]
    # This await completes only if the loop is free while the fetch is blocked in its thread.
    assert await asyncio.to_thread(idp.entered.wait, 10)
    assert not any(task.done() for task in lookups)
    idp.hold.set()
    users = await asyncio.gather(*lookups)
    assert [u.identifier for u in users] == ["auth0|ann"] * 3
    assert idp.fetches == 1


async def test_a_hanging_provider_times_out(idp: IdentityProvider) -> None:
    settings = settings_for(idp, auth_jwks_timeout_seconds=0.5)
    idp.hold.clear()
    started = time.monotonic()
    assert await refusal(RSA.sign(idp_claims()), settings) == "keys_unavailable"
    assert time.monotonic() - started < 5
    idp.hold.set()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keys(idp: IdentityProvider, clock: Clock, refresh: float = 30, cache: float = 300) -> JwksKeys:
    return JwksKeys(idp.url, refresh_seconds=refresh, cache_seconds=cache, timeout_seconds=5, clock=clock)


async def test_a_flood_of_unknown_kids_fetches_at_most_once_per_interval(idp: IdentityProvider) -> None:
    clock = Clock()
    cache = keys(idp, clock)
    assert await cache.get(RSA.kid) is not None and idp.fetches == 1
    flood = await asyncio.gather(*(cache.get(f"made-up-{i}") for i in range(200)))
    assert flood == [None] * 200 and idp.fetches == 1  # within the interval: answered from the cache
    clock.now += 29.9
    assert await cache.get("made-up-again") is None and idp.fetches == 1
    clock.now += 0.1
    flood = await asyncio.gather(*(cache.get(f"made-up-{i}") for i in range(200)))
    assert flood == [None] * 200 and idp.fetches == 2  # one refresh, shared by the whole flood
    assert await cache.get(RSA.kid) is not None and idp.fetches == 2


async def test_rotation_a_new_kid_is_accepted_after_one_refresh(idp: IdentityProvider) -> None:
    clock = Clock()
    cache = keys(idp, clock)
    assert await cache.get(RSA.kid) is not None
    rotated = new_key("RS256", "rsa-2")
    idp.keys = [rotated, EC, ED]  # the provider rotates: rsa-1 is gone, rsa-2 is new
    assert await cache.get(rotated.kid) is None  # the last fetch was just now: no refresh yet
    clock.now += 30
    assert await cache.get(rotated.kid) is not None and idp.fetches == 2
    assert await cache.get(RSA.kid) is None  # no longer published: refused
    assert idp.fetches == 2


async def test_stale_keys_are_fetched_again_and_kept_if_the_provider_fails(idp: IdentityProvider) -> None:
    clock = Clock()
    cache = keys(idp, clock, refresh=30, cache=60)
    assert await cache.get(RSA.kid) is not None
    clock.now += 59
    assert await cache.get(RSA.kid) is not None and idp.fetches == 1  # still fresh
    clock.now += 1
    idp.status = 503
    assert await cache.get(RSA.kid) is not None and idp.fetches == 2  # refetch failed: kept
    assert await cache.get(RSA.kid) is not None and idp.fetches == 2  # and retried only after 30 s
    clock.now += 30
    idp.status = 200
    assert await cache.get(RSA.kid) is not None and idp.fetches == 3


async def test_a_provider_down_from_the_start_is_retried_at_the_bounded_rate(idp: IdentityProvider) -> None:
    clock = Clock()
    cache = keys(idp, clock)
    idp.status = 500
    assert await asyncio.gather(*(cache.get(RSA.kid) for _ in range(50))) == [None] * 50
    assert not cache.available and idp.fetches == 1
    idp.status = 200
    assert await cache.get(RSA.kid) is None and idp.fetches == 1
    clock.now += 30
    assert await cache.get(RSA.kid) is not None and cache.available and idp.fetches == 2


JWKS_ENV = {
    "SWITCHBOARD_AUTH_JWKS_URL": "https://idp.test/.well-known/jwks.json",
    "SWITCHBOARD_AUTH_JWKS_ISSUER": ISSUER,
    "SWITCHBOARD_AUTH_JWKS_AUDIENCE": "api-1, api-2",
}


def test_jwks_settings_are_read_and_turn_login_on() -> None:
    settings = Settings.from_env(JWKS_ENV)
    assert settings.auth_jwks_audience == ("api-1", "api-2")
    assert settings.auth_jwks_algorithms == ("RS256", "ES256", "EdDSA")
    assert (settings.auth_jwks_refresh_seconds, settings.auth_jwks_cache_seconds) == (60.0, 600.0)
    assert settings.login_required and settings.auth_secret is None
    local = Settings.from_env({**JWKS_ENV, "SWITCHBOARD_AUTH_JWKS_URL": "http://127.0.0.1:9/jwks"})
    assert local.auth_jwks_url == "http://127.0.0.1:9/jwks"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"SWITCHBOARD_AUTH_JWKS_URL": "http://idp.test/jwks"}, "AUTH_JWKS_URL must be an https"),
        ({"SWITCHBOARD_AUTH_JWKS_URL": "file:///etc/passwd"}, "AUTH_JWKS_URL must be an https"),
        ({"SWITCHBOARD_AUTH_JWKS_ISSUER": ""}, "AUTH_JWKS_ISSUER is required"),
        ({"SWITCHBOARD_AUTH_JWKS_AUDIENCE": ""}, "AUTH_JWKS_AUDIENCE is required"),
        ({"SWITCHBOARD_AUTH_JWKS_ALGORITHMS": "RS256 HS256"}, "AUTH_JWKS_ALGORITHMS accepts only"),
        ({"SWITCHBOARD_AUTH_JWKS_ALGORITHMS": "none"}, "AUTH_JWKS_ALGORITHMS accepts only"),
        ({"SWITCHBOARD_AUTH_JWKS_REFRESH_SECONDS": "0"}, "AUTH_JWKS_REFRESH_SECONDS must be a positive"),
        ({"SWITCHBOARD_AUTH_JWKS_TIMEOUT_SECONDS": "x"}, "AUTH_JWKS_TIMEOUT_SECONDS must be a float"),
        ({"SWITCHBOARD_AUTH_JWKS_CACHE_SECONDS": "10"}, "AUTH_JWKS_CACHE_SECONDS .* must not be below"),
        ({"SWITCHBOARD_AUTH_JWKS_URL": ""}, "AUTH_JWKS_ISSUER is set but SWITCHBOARD_AUTH_JWKS_URL is not"),
        ({"SWITCHBOARD_ALLOWED_ORIGINS": "*"}, "ALLOWED_ORIGINS does not accept"),
        ({"SWITCHBOARD_ALLOWED_ORIGINS": "https://a.test/"}, "ALLOWED_ORIGINS entries must be origins"),
        ({"SWITCHBOARD_COOKIE_SECURE": "maybe"}, "COOKIE_SECURE must be true or false"),
    ],
)
def test_bad_auth_settings_fail_naming_the_variable(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=f"SWITCHBOARD_{message}"):
        Settings.from_env({**JWKS_ENV, **changes})


def test_origin_and_cookie_settings() -> None:
    settings = Settings.from_env(
        {
            "SWITCHBOARD_ALLOWED_ORIGINS": "https://App.test, http://127.0.0.1:5173",
            "SWITCHBOARD_COOKIE_SECURE": "0",
        }
    )
    assert settings.allowed_origins == ("https://app.test", "http://127.0.0.1:5173")
    assert settings.cookie_secure is False
    assert Settings.from_env({}).cookie_secure is True and Settings.from_env({}).allowed_origins == ()


async def test_a_token_without_a_usable_kid_is_refused_without_asking_the_provider(
    idp: IdentityProvider,
) -> None:
    """An empty or missing `kid` can name no key: refused as `unknown_key` at once, even while the
    provider is down (no fetch, so not `keys_unavailable`)."""
    idp.status = 500
    settings = settings_for(idp)
    for header in ({"kid": ""}, {}):
        token = jwt.encode(idp_claims(), RSA.private, algorithm="RS256", headers=header)
        assert await refusal(token, settings) == "unknown_key"
    assert idp.fetches == 0
