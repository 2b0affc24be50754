"""The `switchboard` command."""

from __future__ import annotations

import argparse

import uvicorn

from bus import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="switchboard")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="serve the demo chat app")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.command == "demo":
        _demo(args.host, args.port)


def _demo(host: str, port: int) -> None:
    settings = get_settings()
    base = f"http://{host}:{port}"
    bus = f"Redis at {settings.redis_url}" if settings.redis_url else "the in-memory bus"
    print(
        f"Switchboard demo on {base} using {bus}.\n"
        f"  Socket.IO endpoint: {base}/chat/ws/socket.io (websocket transport)\n"
        f"  Connect a client, read its session id from the `session` event, then:\n"
        f"    curl {base}/hello/SESSION_ID\n"
        f"  Set SWITCHBOARD_REDIS_URL=redis://127.0.0.1:6379/0 to run several replicas.",
        flush=True,
    )
    uvicorn.run("web.demo.app:app", host=host, port=port)


if __name__ == "__main__":
    main()
