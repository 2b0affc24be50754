"""`switchboard sessions list|show|tail`: look at the sessions in the same Redis the replicas use.

- `list [--user U] [--replica R]`: every session record (SCAN over `bus.keys` patterns, never KEYS);
- `show ID`: its registry record, log bounds, open questions and the replica holding it;
- `tail ID`: follow what is sent to it, live. By default the session's log (durable events, with their
  offsets, read with `XREAD BLOCK`: invisible to senders); with `--all`, its channel (every event,
  also stream tokens; while it runs, a send to a session without a socket reports `delivered`, since
  this command received it live).

Output is for people; `--json` prints JSON (one object per line for `tail`). Never prints tokens or the
resume token's hash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
from redis.asyncio.cluster import RedisCluster

from bus import Envelope, EnvelopeError, Keys, SessionRecord, Settings, Target, get_settings
from bus.backend import open_backend
from bus.envelope import unframe
from bus.keys import sharded
from bus.redis_backend import RedisBackend
from bus.registry import SessionRegistry, valid_session_id


def add_parser(commands: Any) -> None:
    sessions = commands.add_parser("sessions", help="inspect sessions in Redis (list, show, tail)")
    what = sessions.add_subparsers(dest="action", required=True)
    listing = what.add_parser("list", help="list sessions")
    listing.add_argument("--user", help="only this user's sessions (identifier)")
    listing.add_argument("--replica", help="only the sessions this replica holds or held last")
    show = what.add_parser("show", help="one session: record, log bounds, open questions, holder")
    show.add_argument("session_id")
    tail = what.add_parser("tail", help="follow what is sent to a session (Ctrl-C stops)")
    tail.add_argument("session_id")
    tail.add_argument("--all", action="store_true", help="every event from its channel, not only its log")
    for sub in (listing, show, tail):
        sub.add_argument("--json", action="store_true", help="JSON output for scripts")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    if settings.redis_url is None:
        print("switchboard sessions: set SWITCHBOARD_REDIS_URL to the replicas' Redis", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, settings))
    except KeyboardInterrupt:
        return 0


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    inspector = Inspector(settings)
    try:
        if args.action == "list":
            rows = [r async for r in inspector.sessions(user=args.user, replica=args.replica)]
            _print_list(rows, args.json)
            return 0
        if args.action == "show":
            found = await inspector.show(args.session_id)
            if found is None:
                print(f"session {args.session_id} not found", file=sys.stderr)
                return 1
            _print_show(found, args.json)
            return 0
        if await inspector.record(args.session_id) is None:
            print(f"session {args.session_id} not found", file=sys.stderr)
            return 1
        follow = inspector.tail_channel if args.all else inspector.tail_log
        print(f"tailing session {args.session_id} (Ctrl-C stops)", file=sys.stderr, flush=True)
        async for entry in follow(args.session_id):
            _print_event(entry, args.json)
        return 0
    finally:
        await inspector.close()


class Inspector:
    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        backend = open_backend(
            settings.redis_url,
            self.keys.replica("inspect"),
            timeout=settings.redis_timeout_seconds,
            max_connections=settings.redis_max_connections,
        )
        if not isinstance(backend, RedisBackend):  # Sentinel and Cluster backends are RedisBackends
            raise ValueError(f"switchboard sessions needs Redis, not {settings.redis_url}")
        self._backend = backend
        #: The same client the bus uses: a single node, the primary Sentinel names, or the cluster.
        self.redis: Any = backend.client
        self.registry = SessionRegistry(self._backend, self.keys, settings)

    async def close(self) -> None:
        await self._backend.disconnect()

    async def record(self, session_id: str) -> SessionRecord | None:
        return await self.registry.get(session_id) if valid_session_id(session_id) else None

    async def sessions(self, *, user: str | None, replica: str | None) -> AsyncIterator[dict[str, Any]]:
        async for key in self.redis.scan_iter(match=self.keys.session_pattern(), count=500):
            session_id = self.keys.session_id_of(key.decode() if isinstance(key, bytes) else key)
            if session_id is None or (record := await self.record(session_id)) is None:
                continue
            row = _summary(record)
            if (user is None or row["user"] == user) and (replica is None or row["replica"] == replica):
                yield row

    async def show(self, session_id: str) -> dict[str, Any] | None:
        record = await self.record(session_id)
        if record is None:
            return None
        first, last, epoch = await self._backend.log_bounds(
            self.keys.session(session_id), self.keys.session_log(session_id)
        )
        length = await self.redis.xlen(self.keys.session_log(session_id))
        asks = await self.registry.open_asks(session_id)
        ttl = await self.redis.pttl(self.keys.session(session_id))
        return _summary(record) | {
            "acked": record.acked,
            "dataKeys": sorted(_keys_of(record.data)),
            "expiresInSeconds": round(ttl / 1000, 1) if ttl > 0 else None,
            "log": {"first": first or None, "last": last, "length": int(length), "epoch": epoch},
            "openAsks": [
                {
                    "question": (a.get("msg") or {}).get("output"),
                    "deadline": a.get("deadline"),
                    "correlationId": a.get("correlationId"),
                }
                for a in asks
            ],
            "holder": record.replica if record.connected else None,
        }

    async def tail_log(self, session_id: str) -> AsyncIterator[dict[str, Any]]:
        key, last = self.keys.session_log(session_id), "$"
        while True:
            found: Any = await self.redis.xread({key: last}, block=1000, count=100)
            for _, entries in found or []:
                for offset, fields in entries:
                    last = offset.decode()
                    yield _event(fields.get(b"e", b""), last, self.settings)

    async def tail_channel(self, session_id: str) -> AsyncIterator[dict[str, Any]]:
        channel = self.keys.channel(Target.session(session_id))
        pubsub = self.redis.pubsub()
        # On a cluster, session channels are shard channels (docs/deploy-redis.md).
        shard = isinstance(self.redis, RedisCluster) and sharded(channel)
        await (pubsub.ssubscribe(channel) if shard else pubsub.subscribe(channel))
        try:
            while True:
                if shard:
                    message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
                else:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message["type"] not in ("message", "smessage"):
                    continue
                try:
                    offset, _, data = unframe(message["data"])
                except EnvelopeError:
                    continue
                yield _event(data, offset, self.settings)
        finally:
            await pubsub.aclose()


def _summary(record: SessionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "user": (record.user or {}).get("identifier"),
        "thread": record.thread_id,
        "replica": record.replica,
        "connected": record.connected,
        "createdAt": record.created_at,
        "lastSeen": record.last_seen,
    }


def _keys_of(data: bytes) -> list[str]:
    try:
        value = msgpack.unpackb(data, raw=False) if data else {}
    except Exception:
        return []
    return [str(k) for k in value] if isinstance(value, dict) else []


def _event(data: bytes, offset: str, settings: Settings) -> dict[str, Any]:
    try:
        envelope = Envelope.decode(data, max_bytes=settings.max_envelope_bytes)
    except EnvelopeError as exc:
        return {"offset": offset or None, "error": f"undecodable: {exc}"}
    return {
        "offset": offset or None,
        "id": envelope.id,
        "event": envelope.event,
        "origin": envelope.origin,
        "createdAt": envelope.created_at,
        "payload": envelope.payload,
    }


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _print_list(rows: list[dict[str, Any]], as_json: bool) -> None:
    rows.sort(key=lambda r: r["lastSeen"], reverse=True)
    if as_json:
        print(json.dumps(rows))
        return
    print(f"{'SESSION':<26} {'USER':<16} {'REPLICA':<24} {'STATE':<12} LAST SEEN")
    for r in rows:
        state = "connected" if r["connected"] else "detached"
        print(f"{r['id']:<26} {r['user'] or '-':<16} {r['replica']:<24} {state:<12} {_when(r['lastSeen'])}")
    print(f"{len(rows)} session(s)")


def _print_show(found: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(found))
        return
    log = found["log"]
    lines = [
        f"session    {found['id']}",
        f"user       {found['user'] or '-'}",
        f"thread     {found['thread'] or '-'}",
        f"state      {'connected to ' + found['replica'] if found['connected'] else 'detached'}"
        f" (last replica {found['replica']})",
        f"created    {_when(found['createdAt'])}",
        f"last seen  {_when(found['lastSeen'])}",
        f"expires    {_expiry(found['expiresInSeconds'])}",
        f"log        {log['length']} entries, first {log['first'] or '-'}, last {log['last']};"
        f" acked {found['acked']}",
        f"data keys  {', '.join(found['dataKeys']) or '-'}",
        f"open asks  {len(found['openAsks'])}",
    ]
    lines += [f"  - {a['question']!r} (until {_when(a['deadline'] or 0)})" for a in found["openAsks"]]
    print("\n".join(lines))


def _expiry(seconds: float | None) -> str:
    """A connected session's record has no time to live: it lasts while its replica beats."""
    return f"in {seconds}s" if seconds is not None else "not while its replica holds it"


def _print_event(entry: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(entry, default=str), flush=True)
        return
    payload = entry.get("payload") or {}
    text = payload.get("output", payload.get("token", payload.get("content", "")))
    print(f"{entry.get('offset') or '-':>8} {entry.get('event', '?'):<16} {text!s:.100}", flush=True)
