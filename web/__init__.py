"""The Switchboard chat runtime: mount a chat module on FastAPI and reach its sessions from anywhere."""

from web.ask import AskUserMessage
from web.auth import SEND_SCOPE, AuthError, authenticate_user, create_jwt, verify_jwt
from web.callbacks import on_chat_end, on_chat_start, on_message
from web.context import Context, get_context, init_http_context, init_ws_context, user_session
from web.data import BusDataLayer, DataLayer
from web.errors import ContextError, SessionDataUnavailable, SessionForbidden, SessionNotFound
from web.message import Message
from web.mount import mount_app
from web.server import ChatServer
from web.session import WebsocketSession
from web.user import User
from web.webhooks import webhook_router

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
    "init_http_context",
    "init_ws_context",
    "mount_app",
    "on_chat_end",
    "on_chat_start",
    "on_message",
    "user_session",
    "verify_jwt",
    "webhook_router",
]
