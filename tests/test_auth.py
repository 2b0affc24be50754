"""Tokens: minting, every way a token can be bad, rotation, and the FastAPI dependency."""

import base64
import json
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI
from hypothesis import given
from hypothesis import strategies as st

from bus import Settings, get_settings
from web import AuthError, User, authenticate_user, create_jwt, verify_jwt
from web.auth import handshake_token, key_id, new_secret, verify_token
from web.cli import main as cli

SECRET = "s" * 40
OLD = "o" * 40
SETTINGS = Settings(auth_secret=SECRET, auth_previous_secrets=(OLD,))


def sign(claims: dict[str, object], secret: str = SECRET, **header: object) -> str:
    headers = {"kid": key_id(secret), **header}
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)


def claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {"sub": "ann", "identifier": "ann", "iat": now, "exp": now + 60}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip_carries_the_user() -> None:
    user = User("ann", "Ann", {"team": "blue"})
    token = create_jwt(user, settings=SETTINGS)
    back = verify_jwt(token, SETTINGS)
    assert (back.identifier, back.display_name, back.metadata, back.scopes) == (
        "ann",
        "Ann",
        {"team": "blue"},
        (),
    )
    assert jwt.get_unverified_header(token)["kid"] == key_id(SECRET)
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert payload["exp"] - payload["iat"] == 15 * 24 * 3600


def test_expires_in_sets_the_lifetime_and_the_claims_are_the_documented_ones() -> None:
    token = create_jwt(User("ann", "Ann"), 60, settings=SETTINGS)
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert payload["exp"] - payload["iat"] == 60
    assert {k: payload[k] for k in ("sub", "identifier", "display_name", "metadata")} == {
        "sub": "ann",
        "identifier": "ann",
        "display_name": "Ann",
        "metadata": {},
    }
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_service_tokens_carry_their_scope() -> None:
    token = create_jwt(User("service:billing"), 60, scope="sessions:send", settings=SETTINGS)
    assert verify_jwt(token, SETTINGS).scopes == ("sessions:send",)


def test_a_secret_of_exactly_32_bytes_signs() -> None:
    assert verify_jwt(
        create_jwt(User("ann"), settings=Settings(auth_secret="x" * 32)), Settings(auth_secret="x" * 32)
    )
    with pytest.raises(RuntimeError, match="shorter than 32 bytes"):
        create_jwt(User("ann"), settings=Settings(auth_secret="x" * 31))


@pytest.mark.parametrize("secret", [None, "", "short-secret"])
def test_refuses_to_sign_without_a_strong_secret(secret: str | None) -> None:
    with pytest.raises(RuntimeError, match="create-secret"):
        create_jwt(User("ann"), settings=Settings(auth_secret=secret))


def tampered() -> str:
    header, _, signature = sign(claims()).split(".")
    payload = b64(json.dumps(claims(sub="root", identifier="root")).encode())
    return f"{header}.{payload}.{signature}"


def alg_none() -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": key_id(SECRET)}).encode())
    return f"{header}.{b64(json.dumps(claims()).encode())}."


def rs_confusion() -> str:
    # The classic attack: an RS256 header with an HMAC made with the (public) key material.
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": key_id(SECRET)}).encode())
    body = b64(json.dumps(claims()).encode())
    import hashlib
    import hmac

    mac = hmac.new(SECRET.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(mac)}"


BAD_TOKENS = {
    "garbage": ("not.a.jwt", "malformed"),
    "two parts": ("abc.def", "malformed"),
    "bad signature": (sign(claims())[:-4] + "AAAA", "bad_signature"),
    "wrong secret": (sign(claims(), "w" * 40, kid=key_id(SECRET)), "bad_signature"),
    "unknown key id": (sign(claims(), "w" * 40), "unknown_key"),
    "no key id": (jwt.encode(claims(), SECRET, algorithm="HS256"), "unknown_key"),
    "alg none": (alg_none(), "bad_algorithm"),
    "hs/rs confusion": (rs_confusion(), "bad_algorithm"),
    "expired": (sign(claims(exp=int(time.time()) - 3600)), "expired"),
    "not yet valid": (sign(claims(nbf=int(time.time()) + 3600)), "not_yet_valid"),
    "tampered payload": (tampered(), "bad_signature"),
    "missing exp": (sign(claims(exp=None)), "missing_claim"),
    "missing iat": (sign(claims(iat=None)), "missing_claim"),
    "missing sub": (sign(claims(sub=None)), "missing_claim"),
    "bad metadata": (sign(claims(metadata=[1])), "malformed"),
    "removed secret": (sign(claims(), "r" * 40), "unknown_key"),
}


@pytest.mark.parametrize("name", BAD_TOKENS)
def test_every_bad_token_names_its_failure(name: str) -> None:
    token, reason = BAD_TOKENS[name]
    with pytest.raises(AuthError) as raised:
        verify_jwt(token, SETTINGS)
    assert raised.value.reason == reason
    assert token not in str(raised.value)


def test_audience_and_issuer_are_enforced_when_configured() -> None:
    strict = Settings(auth_secret=SECRET, token_audience="chat", token_issuer="sb")
    assert verify_jwt(create_jwt(User("ann"), settings=strict), strict).identifier == "ann"
    for changes, reason in [
        ({"aud": "other", "iss": "sb"}, "wrong_audience"),
        ({"aud": "chat", "iss": "x"}, "wrong_issuer"),
    ]:
        with pytest.raises(AuthError) as raised:
            verify_jwt(sign(claims(**changes)), strict)
        assert raised.value.reason == reason


def test_rotation_previous_secret_verifies_removed_one_does_not() -> None:
    old_token = create_jwt(User("ann"), settings=Settings(auth_secret=OLD))
    assert verify_jwt(old_token, SETTINGS).identifier == "ann"
    rotated_out = Settings(auth_secret=SECRET)
    with pytest.raises(AuthError, match="key this server does not know"):
        verify_jwt(old_token, rotated_out)


@given(st.text(max_size=300))
def test_arbitrary_strings_are_refused_with_auth_error(text: str) -> None:
    with pytest.raises(AuthError):
        verify_jwt(text, SETTINGS)


@given(
    st.lists(
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60),
        min_size=3,
        max_size=3,
    )
)
def test_arbitrary_three_part_tokens_are_refused_with_auth_error(parts: list[str]) -> None:
    with pytest.raises(AuthError):
        verify_jwt(".".join(parts), SETTINGS)


@given(st.integers(min_value=0), st.characters())
def test_a_changed_character_in_a_good_token_is_refused(where: int, char: str) -> None:
    good = sign(claims())
    index = where % len(good)
    changed = good[:index] + char + good[index + 1 :]
    if changed == good:  # PyJWT decodes strictly: no other spelling of the same bytes verifies
        assert verify_jwt(changed, SETTINGS).identifier == "ann"
        return
    with pytest.raises(AuthError):
        verify_jwt(changed, SETTINGS)


@pytest.fixture
def env_auth(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SWITCHBOARD_AUTH_SECRET", SECRET)
    monkeypatch.setenv("SWITCHBOARD_AUTH_PREVIOUS_SECRETS", OLD)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


async def test_dependency_answers_401_with_the_failure_class(env_auth: None) -> None:
    app = FastAPI()

    @app.get("/me")
    async def me(user: User = Depends(authenticate_user)) -> dict[str, str]:  # noqa: B008
        return {"identifier": user.identifier}

    good = create_jwt(User("ann"))
    cases = [
        ({}, "missing"),
        ({"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"}, "wrong_scheme"),
        ({"Authorization": "Bearer "}, "missing"),
        ({"Authorization": "Bearer garbage"}, "malformed"),
        ({"Authorization": f"Bearer {BAD_TOKENS['expired'][0]}"}, "expired"),
        ({"Authorization": f"Bearer {BAD_TOKENS['alg none'][0]}"}, "bad_algorithm"),
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://127.0.0.1") as client:
        for headers, reason in cases:
            response = await client.get("/me", headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
            message = AuthError(reason).message  # type: ignore[arg-type]
            assert response.json() == {
                "detail": {"error": "invalid_token", "reason": reason, "message": message}
            }
            assert good not in response.text
        ok = await client.get("/me", headers={"Authorization": f"Bearer {good}"})
        assert ok.json() == {"identifier": "ann"}
        cookie = await client.get("/me", headers={"Cookie": f"access_token={good}"})
        assert cookie.json() == {"identifier": "ann"}
        # The header wins over a cookie, both ways round.
        both = {"Authorization": f"Bearer {good}", "Cookie": "access_token=garbage"}
        assert (await client.get("/me", headers=both)).json() == {"identifier": "ann"}
        bad_header = {"Authorization": "Bearer garbage", "Cookie": f"access_token={good}"}
        assert (await client.get("/me", headers=bad_header)).status_code == 401


def test_cli_create_secret_and_service_token(env_auth: None, capsys: pytest.CaptureFixture[str]) -> None:
    cli(["create-secret"])
    out = capsys.readouterr()
    secret = out.out.strip()
    assert len(base64.urlsafe_b64decode(secret + "==")) >= 48
    assert "logs everybody out" in out.err
    cli(["token", "--service", "billing"])
    user = verify_jwt(capsys.readouterr().out.strip())
    assert user.identifier == "service:billing" and user.scopes == ("sessions:send",)


def test_without_a_secret_every_token_is_refused_not_configured() -> None:
    token = create_jwt(User("ann"), settings=SETTINGS)
    with pytest.raises(AuthError) as raised:
        verify_jwt(token, Settings())
    assert raised.value.reason == "not_configured"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": -5}, None),  # expired 5 s ago: inside the 10 s leeway
        ({"exp": -15}, "expired"),
        ({"nbf": 5}, None),  # valid in 5 s: inside the leeway
        ({"nbf": 15}, "not_yet_valid"),
        ({"iat": 5}, None),  # issued "in 5 s" by a clock slightly ahead
        ({"iat": 15}, "not_yet_valid"),
    ],
)
def test_the_10_second_leeway_on_exp_nbf_and_iat(changes: dict[str, int], reason: str | None) -> None:
    now = int(time.time())
    token = sign(claims(**{name: now + delta for name, delta in changes.items()}))
    if reason is None:
        assert verify_jwt(token, SETTINGS).identifier == "ann"
    else:
        with pytest.raises(AuthError) as raised:
            verify_jwt(token, SETTINGS)
        assert raised.value.reason == reason


def _token_of_length(length: int) -> str | None:
    """A valid token exactly `length` characters long, padded through its metadata (None if none is)."""
    for header_pad in range(4):  # a JWT part is never 1 more than a multiple of 4: vary two parts
        for pad in range(length):
            token = sign(claims(metadata={"pad": "x" * pad}), x="y" * header_pad)
            if len(token) == length:
                return token
            if len(token) > length:
                break
    return None


def test_tokens_over_8_kib_are_malformed_and_8_kib_is_accepted() -> None:
    at_limit, over = _token_of_length(8192), _token_of_length(8193)
    assert at_limit is not None and over is not None
    assert verify_jwt(at_limit, SETTINGS).identifier == "ann"
    with pytest.raises(AuthError) as raised:
        verify_jwt(over, SETTINGS)
    assert raised.value.reason == "malformed"


@pytest.mark.parametrize(
    ("environ", "auth", "presented"),
    [
        ({}, {"token": "abc.def.ghi"}, "abc.def.ghi"),
        ({}, {"token": "Bearer abc.def.ghi"}, "abc.def.ghi"),
        ({}, {"token": "bearer  abc.def.ghi "}, "abc.def.ghi"),
        ({}, {"token": "BEARER abc"}, "abc"),
        ({}, {"token": "Bearerabc"}, "Bearerabc"),  # no scheme without its space
        ({}, {"token": 42}, 42),  # not text: verify_token refuses it as `missing`
        ({"HTTP_COOKIE": "access_token=abc"}, {"token": "mine"}, "mine"),  # the auth payload wins
        ({"HTTP_COOKIE": "theme=dark; access_token=from.the.cookie"}, {}, "from.the.cookie"),
        ({"HTTP_COOKIE": "access_token=from.the.cookie"}, {"token": ""}, "from.the.cookie"),
        ({"HTTP_COOKIE": "access_token=from.the.cookie"}, {"token": None}, "from.the.cookie"),
        ({"HTTP_COOKIE": "theme=dark"}, {}, None),
        ({"HTTP_COOKIE": "ACCESS_TOKEN=x"}, {}, None),  # cookie names are case-sensitive
        ({}, {}, None),
    ],
)
def test_the_handshake_presents_the_auth_token_else_the_cookie(
    environ: dict[str, str], auth: dict[str, object], presented: object
) -> None:
    assert handshake_token(environ, auth) == presented


async def test_a_handshake_token_from_either_place_verifies() -> None:
    good = create_jwt(User("ann"), settings=SETTINGS)
    for environ, auth in [
        ({}, {"token": good}),
        ({}, {"token": f"Bearer {good}"}),
        ({"HTTP_COOKIE": f"access_token={good}"}, {}),
    ]:
        assert (await verify_token(handshake_token(environ, auth), SETTINGS)).identifier == "ann"
    with pytest.raises(AuthError) as raised:
        await verify_token(handshake_token({}, {}), SETTINGS)
    assert raised.value.reason == "missing"


def test_a_new_secret_is_64_random_bytes_as_url_safe_text() -> None:
    secrets = {new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert len(secret) == 86 and len(base64.urlsafe_b64decode(secret + "==")) == 64


def test_signing_without_a_secret_says_how_to_make_one() -> None:
    with pytest.raises(RuntimeError) as raised:
        create_jwt(User("ann"), settings=Settings(auth_secret=None))
    assert str(raised.value) == (
        "SWITCHBOARD_AUTH_SECRET is not set; create one with `switchboard create-secret`"
    )
    with pytest.raises(RuntimeError) as raised:
        create_jwt(User("ann"), settings=Settings(auth_secret="x" * 31))
    assert str(raised.value) == (
        "SWITCHBOARD_AUTH_SECRET is shorter than 32 bytes; "
        "create a strong one with `switchboard create-secret`"
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"sub": ""}, "missing_claim"),  # PyJWT accepts an empty subject; we do not
        ({"scope": 5}, "malformed"),
        ({"scope": ["sessions:send"]}, "malformed"),
        ({"display_name": 5}, "malformed"),
        ({"metadata": "team"}, "malformed"),
    ],
)
def test_claims_of_the_wrong_shape_are_refused(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(AuthError) as raised:
        verify_jwt(sign(claims(**changes)), SETTINGS)
    assert raised.value.reason == reason


def test_a_name_claim_is_the_display_name_when_there_is_no_display_name() -> None:
    user = verify_jwt(sign(claims(name="Ann A.", scope="a b")), SETTINGS)
    assert (user.display_name, user.metadata, user.scopes) == ("Ann A.", {}, ("a", "b"))
    assert verify_jwt(sign(claims(name="Ann A.", display_name="Annie")), SETTINGS).display_name == "Annie"
