"""The login endpoints under the mount path, for the chat page and other browsers:

- `GET  {path}/auth/config`: what the page needs to know (`requireLogin`, `passwordAuth`, `headerAuth`);
- `POST {path}/auth/login`: `{username, password}` (JSON or form) checked by `@password_auth_callback`;
- `POST {path}/auth/header`: the request's headers checked by `@header_auth_callback` (behind an
  authenticating proxy);
- `POST {path}/auth/logout`: clears the cookie.

A successful login sets the `access_token` cookie (HttpOnly, SameSite=Lax, Secure unless
SWITCHBOARD_COOKIE_SECURE=false) to a token from create_jwt; the token is not in the body, so page
scripts never see it. Cross-origin requests are answered with CORS headers only for
SWITCHBOARD_ALLOWED_ORIGINS; a POST whose `Origin` is neither the app's own nor one of those is refused
(403), so another site cannot log a visitor in or out (login CSRF).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from bus import Settings
from web.auth import create_jwt
from web.callbacks import call_user_hook, hooks
from web.cors import origin_allowed, own_origins
from web.user import User

log = logging.getLogger("switchboard.web")

COOKIE = "access_token"
_MAX_BODY = 8192
_MAX_USERNAME = 256
_MAX_PASSWORD = 1024
_NO_STORE = {"Cache-Control": "no-store"}


def add_login_routes(app: FastAPI, path: str, settings: Settings) -> None:
    """Add the login endpoints of the chat mounted at `path` to `app`."""
    if (hooks.password_auth or hooks.header_auth) and not settings.auth_secret:
        raise RuntimeError(
            "a password or header auth callback needs SWITCHBOARD_AUTH_SECRET to sign the login cookie; "
            "create one with `switchboard create-secret`"
        )
    routes: dict[str, tuple[str, Callable[[Request, Settings], Awaitable[Response]]]] = {
        "config": ("GET", _config),
        "login": ("POST", _password_login),
        "header": ("POST", _header_login),
        "logout": ("POST", _logout),
    }
    for name, (method, handler) in routes.items():
        app.add_api_route(
            f"{path}/auth/{name}",
            _endpoint(handler, settings),
            methods=[method, "OPTIONS"],
            include_in_schema=False,
        )


def _endpoint(
    handler: Callable[[Request, Settings], Awaitable[Response]], settings: Settings
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        origin = request.headers.get("origin")
        allowed = origin is None or origin_allowed(origin, settings, _own(request))
        if request.method == "OPTIONS":
            response: Response = _preflight() if origin and allowed else _refused_origin()
        elif not allowed and request.method == "POST":
            response = _refused_origin()
        else:
            response = await handler(request, settings)
        if origin and allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
        return response

    endpoint.__name__ = f"auth_{handler.__name__.strip('_')}"
    return endpoint


def _own(request: Request) -> set[str]:
    return own_origins(request.url.scheme, request.headers.get("host"), request.headers)


def _preflight() -> Response:
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600",
        },
    )


def _refused_origin() -> Response:
    return _error(403, "origin_not_allowed", "requests from this origin are not allowed")


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": {"error": error, "message": message}}, status, headers=_NO_STORE)


async def _config(request: Request, settings: Settings) -> Response:
    return JSONResponse(
        {
            "requireLogin": settings.login_required,
            "passwordAuth": hooks.password_auth is not None,
            "headerAuth": hooks.header_auth is not None,
            "oauthProviders": [],
        },
        headers=_NO_STORE,
    )


async def _password_login(request: Request, settings: Settings) -> Response:
    if hooks.password_auth is None:
        return _error(404, "not_configured", "no password_auth_callback is defined")
    form = await _credentials(request)
    if isinstance(form, Response):
        return form
    username, password = form
    return _logged_in(await call_user_hook(hooks.password_auth, username, password), settings)


async def _header_login(request: Request, settings: Settings) -> Response:
    if hooks.header_auth is None:
        return _error(404, "not_configured", "no header_auth_callback is defined")
    return _logged_in(await call_user_hook(hooks.header_auth, request.headers), settings)


async def _logout(request: Request, settings: Settings) -> Response:
    response = JSONResponse({"success": True}, headers=_NO_STORE)
    response.delete_cookie(COOKIE, path="/", secure=settings.cookie_secure, httponly=True, samesite="lax")
    return response


def _logged_in(user: User | None, settings: Settings) -> Response:
    if user is None:
        return _error(401, "invalid_credentials", "the credentials were refused")
    token = create_jwt(user, settings=settings)
    response = JSONResponse({"success": True, "user": user.to_dict()}, headers=_NO_STORE)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(settings.token_ttl_seconds),
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )
    log.info("logged in %s", user.identifier)
    return response


async def _credentials(request: Request) -> tuple[str, str] | Response:
    """`username` and `password` from a JSON or form body; an error answer otherwise."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_BODY:
            return _error(413, "too_large", f"the body is over {_MAX_BODY} bytes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, Any]
    try:
        if kind == "application/json":
            loaded = json.loads(body)
            fields = loaded if isinstance(loaded, dict) else {}
        elif kind == "application/x-www-form-urlencoded":
            fields = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        else:
            return _error(415, "unsupported_media_type", "send JSON or a urlencoded form")
    except (ValueError, RecursionError):
        return _error(400, "malformed", "the body is not valid JSON or form data")
    username, password = fields.get("username"), fields.get("password")
    if not (
        isinstance(username, str)
        and isinstance(password, str)
        and 0 < len(username) <= _MAX_USERNAME
        and len(password) <= _MAX_PASSWORD
    ):
        return _error(422, "invalid_form", "username and password are required strings")
    return username, password
