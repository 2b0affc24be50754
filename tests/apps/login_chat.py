"""Chat module with login callbacks (Chainlit's names): passwords, an authenticating proxy's headers, and
an API key through `on_authenticate`. Echoes messages like tests/apps/chat.py."""

import hmac

from web import (
    AuthError,
    Message,
    User,
    header_auth_callback,
    on_authenticate,
    on_chat_start,
    on_message,
    password_auth_callback,
    user_session,
)

PASSWORDS = {"ann": "ann-password", "bob": "bob-password"}
API_KEY = "carol-api-key"


@password_auth_callback
async def check_password(username: str, password: str) -> User | None:
    expected = PASSWORDS.get(username)
    if expected is not None and hmac.compare_digest(password.encode(), expected.encode()):
        return User(identifier=username, display_name=username.title(), metadata={"provider": "credentials"})
    return None


@header_auth_callback
async def from_proxy(headers: dict[str, str]) -> User | None:
    # Behind an authenticating proxy (oauth2-proxy --pass-user-headers), which sets these headers.
    name = headers.get("x-forwarded-user")
    if not name:
        return None
    return User(identifier=name, metadata={"email": headers.get("x-forwarded-email"), "provider": "proxy"})


@on_authenticate
async def api_key(headers: dict[str, str], auth: dict[str, object]) -> User | None:
    key = headers.get("x-api-key") or auth.get("apiKey")
    if key is None:
        return None  # not this scheme: tokens and cookies are checked next
    if isinstance(key, str) and hmac.compare_digest(key.encode(), API_KEY.encode()):
        return User(identifier="carol", metadata={"provider": "api-key"})
    raise AuthError("refused")


@on_chat_start
async def start() -> None:
    user = user_session.get("user")
    await Message(f"hello {user.identifier if user else 'nobody'}").send()


@on_message
async def echo(message: Message) -> None:
    reply = Message()
    await reply.stream_token(f"{message.author} said: ")
    await reply.stream_token(message.content)
    await reply.send()
