"""Decorators a chat module uses to hook into the session lifecycle and into login."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from web.user import User

if TYPE_CHECKING:
    from web.message import Message

Hook = Callable[..., Awaitable[Any]]
#: `(username, password) -> User | None`, async or not (Chainlit's `password_auth_callback`).
PasswordAuth = Callable[[str, str], "Awaitable[User | None] | User | None"]
#: `(headers) -> User | None`, async or not (Chainlit's `header_auth_callback`).
HeaderAuth = Callable[[Mapping[str, str]], "Awaitable[User | None] | User | None"]
#: `(headers, auth payload) -> User | None`, async or not: a custom scheme for HTTP and the socket.
Authenticate = Callable[[Mapping[str, str], Mapping[str, Any]], "Awaitable[User | None] | User | None"]


@dataclass(slots=True)
class Hooks:
    chat_start: Hook | None = None
    message: Callable[[Message], Awaitable[Any]] | None = None
    chat_end: Hook | None = None
    password_auth: PasswordAuth | None = None
    header_auth: HeaderAuth | None = None
    authenticate: Authenticate | None = None


#: The hooks of the chat module this process serves (one chat module per process).
hooks = Hooks()


def on_chat_start(func: Hook) -> Hook:
    """Run once per session, when its first socket connects (not again when it resumes)."""
    hooks.chat_start = func
    return func


def on_message(func: Callable[[Message], Awaitable[Any]]) -> Callable[[Message], Awaitable[Any]]:
    """Run for every `client_message` the user sends, with the message as argument."""
    hooks.message = func
    return func


def on_chat_end(func: Hook) -> Hook:
    """Run once when a session ends: its grace period passed without a resume anywhere."""
    hooks.chat_end = func
    return func


def password_auth_callback(func: PasswordAuth) -> PasswordAuth:
    """Check a username and password posted to `{path}/auth/login`; return the User, or None to refuse.

    On success the endpoint sets the `access_token` cookie (a token from create_jwt)."""
    hooks.password_auth = func
    return func


def header_auth_callback(func: HeaderAuth) -> HeaderAuth:
    """Identify the user of a `{path}/auth/header` request by its headers (set by an authenticating
    proxy); return the User, or None to refuse. On success the endpoint sets the `access_token` cookie."""
    hooks.header_auth = func
    return func


def on_authenticate(func: Authenticate) -> Authenticate:
    """A custom scheme, tried first by `authenticate_user` (headers, `{}`) and by the socket handshake
    (headers, the handshake's `auth` payload): return the User, or None to fall back to tokens.
    Raise `AuthError("refused")` to refuse outright."""
    hooks.authenticate = func
    return func


async def call_user_hook(func: Callable[..., Any], *args: Any) -> User | None:
    """Call a login hook (async or not) and check what it returned."""
    result = func(*args)
    if inspect.isawaitable(result):
        result = await result
    if result is not None and not isinstance(result, User):
        raise TypeError(f"{func.__name__} must return a web.User or None, not {type(result).__name__}")
    return result
