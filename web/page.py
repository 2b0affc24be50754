"""The chat page: one HTML page and its assets, served by mount_app at `{path}/`.

The page is served only where the parent app has no route of its own: it is the router's fallback
(`app.router.default`), consulted after every route, so `path=""` puts the page at `/` without shadowing
a parent's `/`, whenever the parent declares it. It answers exactly:

- `{path}/`: the page (`web/static/index.html`);
- `{path}` (sub-paths only): a relative redirect to `{path}/`;
- `{path}/_switchboard/<file>`: the page's own assets (`web/static/`) and the Socket.IO browser client,
  `socket.io.min.js` (and its source map) from the npm package `socket.io-client`, pinned by
  package-lock.json and never committed: the package build (setup.py) copies it into
  `web/static/vendor/`, so wheels and sdists ship it; in a checkout, `npm ci` installs it into
  `node_modules` beside the project (`make demo` and `make test` also copy it into `web/static/vendor/`).

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
#: The Socket.IO browser client: in the package (the build copies it there), else in a checkout's npm install.
CLIENT_DIRS = (STATIC / "vendor", STATIC.parent.parent / "node_modules" / "socket.io-client" / "dist")
CLIENT_FILES = ("socket.io.min.js", "socket.io.min.js.map")
#: What a page without its client shows (the 503 body of the script) and what the server logs, once.
CLIENT_MISSING = (
    "the Socket.IO browser client (socket.io.min.js) is missing: a package built by `python -m build` "
    "ships it in web/static/vendor/ (this one was built without it: rebuild it with npm installed); "
    "in a checkout, run `npm ci` (`make demo` and `make test` do)"
)
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
        log.warning("chat page: %s", CLIENT_MISSING)


def client_bundle(name: str) -> Path | None:
    """The Socket.IO client file `name`, or None when neither the package nor a checkout has it."""
    for directory in CLIENT_DIRS:
        candidate = directory / name
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
            return PlainTextResponse(CLIENT_MISSING[0].upper() + CLIENT_MISSING[1:] + ".\n", status_code=503)
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
