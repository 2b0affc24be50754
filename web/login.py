"""Who is connecting: the `on_authenticate` hook first, then tokens (`web.auth`), for the socket handshake.

The login endpoints that set the `access_token` cookie are in `web.login_routes` (FastAPI).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus import Settings
from web.auth import handshake_token, verify_token
from web.callbacks import call_user_hook, hooks
from web.user import User


async def handshake_user(
    environ: Mapping[str, Any], auth: Mapping[str, Any], settings: Settings
) -> User | None:
    """The user of a socket handshake: the `on_authenticate` hook's, else the token's when login is
    required (else None: anonymous). Raises AuthError."""
    if hooks.authenticate is not None:
        user = await call_user_hook(hooks.authenticate, handshake_headers(environ), auth)
        if user is not None:
            return user
    if not settings.login_required:
        return None
    return await verify_token(handshake_token(environ, auth), settings)


def handshake_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The handshake request's headers, names in lower case (repeated ones joined by ", ")."""
    scope = environ.get("asgi.scope")
    headers: dict[str, str] = {}
    if isinstance(scope, dict):
        for raw_name, raw_value in scope.get("headers", ()):
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return headers
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            headers[key[5:].replace("_", "-").lower()] = value
    return headers
