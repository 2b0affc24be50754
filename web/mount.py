"""mount_app: put a chat module and its socket server on any FastAPI app."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import socketio
from fastapi import FastAPI

from bus import Settings, get_settings
from web.http import add_session_error_handlers
from web.login_routes import add_login_routes
from web.operations import Operations
from web.page import serve_page
from web.server import ChatServer


def mount_app(
    app: FastAPI, target: str | Path, path: str = "/chat", *, settings: Settings | None = None
) -> ChatServer:
    """Load the chat module at `target` (a .py file) and serve its socket at `{path}/ws/socket.io`.

    The parent app's routes are left alone; the bus starts and stops with the parent's lifespan.
    `settings` default to the SWITCHBOARD_ environment; auth and webhooks use the same instance.
    """
    path = path.rstrip("/")
    if path and not path.startswith("/"):
        raise ValueError(f"path must start with '/' or be empty, got {path!r}")
    _load_chat_module(Path(target))
    server = ChatServer(settings or get_settings())
    # Only the socket prefix is mounted, so a chat app at path="" does not shadow the parent's routes.
    app.mount(f"{path}/ws/socket.io", socketio.ASGIApp(server.sio, socketio_path=None))
    add_login_routes(app, path, server.settings)  # {path}/auth/login, /header, /logout, /config
    serve_page(app, path)  # the chat page at {path}/, only where the parent has no route of its own
    add_session_error_handlers(app)
    # Liveness, readiness and metrics endpoints, JSON logs, the drain on SIGTERM (web/operations.py).
    operations = Operations(app, server, path)
    parent_lifespan = app.router.lifespan_context

    # Starlette never runs the lifespan of a mounted app, so the server rides on the parent's.
    @asynccontextmanager
    async def lifespan(parent: Any) -> AsyncIterator[Any]:
        async with server, operations, parent_lifespan(parent) as state:
            yield state

    app.router.lifespan_context = lifespan
    return server


def _load_chat_module(target: Path) -> None:
    path = target.expanduser().resolve()
    if path.suffix != ".py":
        raise ValueError(f"chat module must be a .py file, got {str(target)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"chat module {str(target)!r} not found (resolved to {path})")
    name = f"switchboard_chat_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load chat module {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
