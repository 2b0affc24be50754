"""FastAPI glue: the `authenticate_user` dependency and the JSON answers for session errors."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from web.auth import AuthError, token_from_header, verify_token
from web.callbacks import call_user_hook, hooks
from web.errors import SessionForbidden, SessionNotFound
from web.user import User


async def authenticate_user(request: Request) -> User:
    """FastAPI dependency: the user of the `on_authenticate` hook, else of the request's bearer token
    (or `access_token` cookie): ours (HS256) or the identity provider's (JWKS)."""
    try:
        if hooks.authenticate is not None:
            user = await call_user_hook(hooks.authenticate, request.headers, {})
            if user is not None:
                return user
        header = request.headers.get("authorization")
        cookie = request.cookies.get("access_token")
        token = token_from_header(header) if header or not cookie else cookie
        return await verify_token(token)
    except AuthError as exc:
        raise HTTPException(
            # The provider's keys could not be fetched: our failure, not the caller's.
            status_code=503 if exc.reason == "keys_unavailable" else 401,
            detail={"error": "invalid_token", "reason": exc.reason, "message": exc.message},
            headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc.message}"'},
        ) from None


def add_session_error_handlers(app: FastAPI) -> None:
    """Unknown or expired sessions answer 404, somebody else's 403, as JSON."""
    app.add_exception_handler(SessionNotFound, _session_not_found)
    app.add_exception_handler(SessionForbidden, _session_forbidden)


async def _session_not_found(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SessionNotFound)
    return JSONResponse(
        status_code=404,
        content={"detail": "session not found", "sessionId": exc.session_id},
    )


async def _session_forbidden(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SessionForbidden)
    return JSONResponse(
        status_code=403,
        content={"detail": "not allowed to send to this session", "sessionId": exc.session_id},
    )
