"""`switchboard sessions list|show|tail` against the Redis of real replicas."""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable

from bus import Settings
from tests.harness import ROOT, ChatClient, Process, Replica
from web import User, create_jwt

SECRET = "c" * 48


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web.cli", "sessions", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_list_show_and_tail(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    env = {"SWITCHBOARD_AUTH_SECRET": SECRET}
    a, b = replicas(env=env), replicas(env=env)
    ann_token = create_jwt(User("ann"), settings=Settings(auth_secret=SECRET))
    ann = await clients().connect(a, {"token": ann_token})
    anonymous = await clients().connect(
        b, {"token": create_jwt(User("bob"), settings=Settings(auth_secret=SECRET))}
    )
    replica_a = (await a.aget("/stats")).json()["replica"]

    listed = json.loads(cli(replica_env, "list", "--json").stdout)
    assert {row["id"] for row in listed} == {ann.session_id, anonymous.session_id}
    only_ann = json.loads(cli(replica_env, "list", "--user", "ann", "--json").stdout)
    assert [row["id"] for row in only_ann] == [ann.session_id]
    on_a = json.loads(cli(replica_env, "list", "--replica", replica_a, "--json").stdout)
    assert [row["id"] for row in on_a] == [ann.session_id] and on_a[0]["connected"]
    table = cli(replica_env, "list")
    assert ann.session_id in table.stdout and "2 session(s)" in table.stdout

    await a.aget(f"/say/{ann.session_id}/first")
    await ann.next("new_message", lambda m: m["output"] == "first")
    shown = json.loads(cli(replica_env, "show", ann.session_id, "--json").stdout)
    assert shown["holder"] == replica_a and shown["user"] == "ann"
    assert shown["log"]["epoch"] and shown["openAsks"] == []
    assert shown["log"] == {"first": "1-0", "last": "1-0", "length": 1, "epoch": shown["log"]["epoch"]}
    text = cli(replica_env, "show", ann.session_id).stdout
    assert "connected to" in text and "1 entries" in text and "not while its replica holds it" in text
    assert "None" not in text
    missing = cli(replica_env, "show", "x" * 24)
    assert missing.returncode == 1 and "not found" in missing.stderr

    argv = [sys.executable, "-m", "web.cli", "sessions", "tail", ann.session_id, "--json"]
    tail = Process(argv, env=replica_env, name="tail")
    every = Process([*argv, "--all"], env=replica_env, name="tail-all")
    try:
        await asyncio.to_thread(tail.wait_for_line, "tailing session")
        await asyncio.to_thread(every.wait_for_line, "tailing session")
        await b.aget(f"/say/{ann.session_id}/second")  # sent from the other replica
        await asyncio.to_thread(tail.wait_for_line, '"output": "second"')
        await asyncio.to_thread(every.wait_for_line, '"output": "second"')
        followed = tail.last_json()
        assert followed["event"] == "new_message" and followed["offset"] == "2-0"
    finally:
        tail.stop()
        every.stop()
    output = tail.output() + every.output() + json.dumps(listed) + json.dumps(shown)
    assert ann.resume_token not in output and ann_token not in output
