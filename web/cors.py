"""Which origins may reach the chat socket and the login endpoints: the app's own, plus
SWITCHBOARD_ALLOWED_ORIGINS (CORS, for embedding the chat in a page of another origin)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bus import Settings


def own_origins(scheme: str, host: str | None, headers: Mapping[str, str]) -> set[str]:
    """The origins a request counts as same-origin with, as python-engineio decides it: the request's
    scheme and `Host`, and the `X-Forwarded-Proto` / `X-Forwarded-Host` ones when a proxy sets them."""
    if not host:
        return set()
    origins = {f"{scheme}://{host}"}
    proto, forwarded = headers.get("x-forwarded-proto"), headers.get("x-forwarded-host")
    if proto or forwarded:
        proto = (proto or scheme).split(",")[0].strip()
        origins.add(f"{proto}://{(forwarded or host).split(',')[0].strip()}")
    return origins


def origin_allowed(origin: str, settings: Settings, own: set[str]) -> bool:
    return origin in own or origin in settings.allowed_origins


def socket_origins(settings: Settings) -> Callable[[str | None, dict[str, Any]], bool] | None:
    """`cors_allowed_origins` for python-socketio: None (its default: same origin only) unless
    SWITCHBOARD_ALLOWED_ORIGINS lists more; then the same origin and those."""
    if not settings.allowed_origins:
        return None

    def allowed(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None:
            return True  # not a browser: CORS does not apply (python-engineio checks only an Origin)
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_X_FORWARDED_") and isinstance(value, str)
        }
        own = own_origins(environ.get("wsgi.url_scheme", "http"), environ.get("HTTP_HOST"), headers)
        return origin_allowed(origin, settings, own)

    return allowed
