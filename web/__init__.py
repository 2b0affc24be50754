"""The Switchboard chat runtime: mount a chat module on FastAPI and reach its sessions from anywhere.

The names that need FastAPI or python-socketio (`mount_app`, `ChatServer`, `authenticate_user`,
`webhook_router`) load on first use, so workers that only send import neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from web.ask import AskUserMessage
from web.auth import SEND_SCOPE, AuthError, create_jwt, verify_jwt, verify_token
from web.callbacks import (
    header_auth_callback,
    on_authenticate,
    on_chat_end,
    on_chat_start,
    on_message,
    password_auth_callback,
)
from web.context import Context, get_context, init_http_context, init_ws_context, user_session
from web.data import BusDataLayer, DataLayer
from web.errors import ContextError, SessionDataUnavailable, SessionForbidden, SessionNotFound
from web.message import Message
from web.session import WebsocketSession
from web.user import User

if TYPE_CHECKING:
    from web.http import authenticate_user
    from web.mount import mount_app
    from web.server import ChatServer
    from web.webhooks import webhook_router

_LAZY = {
    "ChatServer": "web.server",
    "authenticate_user": "web.http",
    "mount_app": "web.mount",
    "webhook_router": "web.webhooks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'web' has no attribute {name!r}")


__all__ = [
    "SEND_SCOPE",
    "AskUserMessage",
    "AuthError",
    "BusDataLayer",
    "ChatServer",
    "Context",
    "ContextError",
    "DataLayer",
    "Message",
    "SessionDataUnavailable",
    "SessionForbidden",
    "SessionNotFound",
    "User",
    "WebsocketSession",
    "authenticate_user",
    "create_jwt",
    "get_context",
    "header_auth_callback",
    "init_http_context",
    "init_ws_context",
    "mount_app",
    "on_authenticate",
    "on_chat_end",
    "on_chat_start",
    "on_message",
    "password_auth_callback",
    "user_session",
    "verify_jwt",
    "verify_token",
    "webhook_router",
]
