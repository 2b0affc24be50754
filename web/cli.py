"""The `switchboard` command."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit, urlunsplit

import uvicorn

from bus import get_settings
from web import sessions_cli
from web.auth import SEND_SCOPE, create_jwt, new_secret
from web.user import User


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="switchboard")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="serve the demo chat app")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    commands.add_parser("create-secret", help="print a fresh SWITCHBOARD_AUTH_SECRET")
    token = commands.add_parser("token", help="print a signed token (needs SWITCHBOARD_AUTH_SECRET)")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="IDENTIFIER", help="a token for this user")
    who.add_argument("--service", metavar="NAME", help="a token for a service principal")
    token.add_argument("--scope", default=None, help=f"space-separated scopes (services: {SEND_SCOPE})")
    token.add_argument("--expires-in", type=float, default=None, metavar="SECONDS")
    sessions_cli.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "sessions":
        sys.exit(sessions_cli.run(args))
    if args.command == "demo":
        _demo(args.host, args.port)
    elif args.command == "create-secret":
        print(new_secret())
        print("warning: changing SWITCHBOARD_AUTH_SECRET logs everybody out", file=sys.stderr)
    elif args.command == "token":
        scope = args.scope if args.user else (args.scope or SEND_SCOPE)
        principal = User(args.user) if args.user else User(f"service:{args.service}")
        try:
            print(create_jwt(principal, args.expires_in, scope=scope))
        except RuntimeError as exc:
            parser.exit(2, f"switchboard token: {exc}\n")


def _demo(host: str, port: int) -> None:
    settings = get_settings()
    base = f"http://{host}:{port}"
    bus = f"Redis at {_redacted(settings.redis_url)}" if settings.redis_url else "the in-memory bus"
    print(
        f"Switchboard demo on {base} using {bus}.\n"
        f"  Open {base}/chat/ in a browser; type a message, or /ask to be asked a question.\n"
        f"  Copy the session id from the page (top right), then from any shell:\n"
        f"    curl {base}/hello/SESSION_ID\n"
        f"  Socket.IO clients: {base}/chat/ws/socket.io (websocket transport, see docs/protocol.md).\n"
        f"  Set SWITCHBOARD_REDIS_URL=redis://127.0.0.1:6379/0 to run several replicas.",
        flush=True,
    )
    uvicorn.run("web.demo.app:app", host=host, port=port)


def _redacted(url: str) -> str:
    """The URL without its password, fit to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


if __name__ == "__main__":
    main()
