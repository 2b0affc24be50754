"""The chat page: one HTML page and its assets, served by mount_app at `{path}/`.

The page is served only where the parent app has no route of its own: it is the router's fallback
(`app.router.default`), consulted after every route, so `path=""` puts the page at `/` without shadowing
a parent's `/`, whenever the parent declares it. It answers exactly:

- `{path}/`: the page (`web/static/index.html`);
- `{path}` (sub-paths only): a relative redirect to `{path}/`;
- `{path}/_switchboard/<file>`: the page's own assets (`web/static/`) and the Socket.IO browser client,
  `socket.io.min.js` from the npm package `socket.io-client` (installed by `npm ci`, never committed).

Every URL in the page is relative to where it was loaded, so it also works behind a proxy that mounts the
app under a prefix (`root_path`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger("switchboard.web")

STATIC = Path(__file__).resolve().with_name("static")
#: Where the page's assets live, below the page: `{path}/_switchboard/app.js`.
ASSETS = "_switchboard/"
#: The Socket.IO client, looked up under `node_modules` beside the project and in the working directory.
CLIENT_DIST = Path("node_modules", "socket.io-client", "dist")
CLIENT_FILES = ("socket.io.min.js", "socket.io.min.js.map")
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".map": "application/json",
    ".svg": "image/svg+xml",
}
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
#: The page loads nothing but its own assets and talks only to its own origin (websocket included).
_PAGE_CSP = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)


def serve_page(app: FastAPI, path: str) -> None:
    """Serve the chat page of the chat mounted at `path` ("" or "/chat"; no trailing slash)."""
    fallback = app.router.default

    async def page_or_fallback(scope: Scope, receive: Receive, send: Send) -> None:
        response = None
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            response = _response(_route_path(scope), path, scope.get("query_string", b""))
        if response is None:
            await fallback(scope, receive, send)
        else:
            await response(scope, receive, send)

    app.router.default = page_or_fallback
    if client_bundle(CLIENT_FILES[0]) is None:
        log.warning("chat page: socket.io-client is not installed; run `npm ci` in the project directory")


def client_bundle(name: str) -> Path | None:
    """The installed socket.io-client file `name`, or None if `npm ci` has not been run."""
    for root in (STATIC.parent.parent, Path.cwd()):
        candidate = root / CLIENT_DIST / name
        if candidate.is_file():
            return candidate
    return None


def _response(route: str, path: str, query: bytes) -> Response | None:
    if path and route == path:
        # Relative, so that a proxy prefix (root_path) is kept: "/prefix/chat" -> "/prefix/chat/".
        location = path.rsplit("/", 1)[1] + "/" + (f"?{query.decode('latin-1')}" if query else "")
        return RedirectResponse(location, status_code=308)
    if route == f"{path}/":
        return _file(STATIC / "index.html", {"Content-Security-Policy": _PAGE_CSP})
    prefix = f"{path}/{ASSETS}"
    if not route.startswith(prefix):
        return None
    name = route[len(prefix) :]
    if name in CLIENT_FILES:
        bundle = client_bundle(name)
        if bundle is None:
            return PlainTextResponse(
                "socket.io-client is not installed: run `npm ci` in the Switchboard project directory "
                "(`make demo` and `make test` do).\n",
                status_code=503,
            )
        return _file(bundle)
    asset = STATIC / name
    if "/" in name or name.startswith(".") or name == "index.html" or not asset.is_file():
        return PlainTextResponse("Not Found", status_code=404)
    return _file(asset)


def _file(file: Path, headers: dict[str, str] | None = None) -> FileResponse:
    media_type = _TYPES.get(file.suffix, "application/octet-stream")
    return FileResponse(file, media_type=media_type, headers={**_HEADERS, **(headers or {})})


def _route_path(scope: Scope) -> str:
    """The request path below the app's root_path (what the app's routes are matched against)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path
