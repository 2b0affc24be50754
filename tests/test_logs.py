"""JSON logs: one object per line naming the replica, the session and the envelope, and never a token,
resume token or secret, although the run below uses all of them (and even puts a token in a URL)."""

import asyncio
import base64
import json
import secrets
import sys
from collections.abc import Callable

import httpx

from bus import Settings
from tests import harness
from tests.harness import ChatClient, Process, Replica
from web import User, create_jwt
from web.logs import Redactor


async def test_json_logs_name_the_session_and_hold_no_secret(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    auth_secret = secrets.token_urlsafe(40)
    previous = secrets.token_urlsafe(40)
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    env = {
        "SWITCHBOARD_LOG_FORMAT": "json",
        "SWITCHBOARD_AUTH_SECRET": auth_secret,
        "SWITCHBOARD_AUTH_PREVIOUS_SECRETS": previous,
        "SWITCHBOARD_WEBHOOK_SECRETS": webhook_secret,
        "SWITCHBOARD_REPLICA_ID": "logs-a",
    }
    a = replicas(env=env)
    tokens = Settings(auth_secret=auth_secret)
    user_token = create_jwt(User("ann"), settings=tokens)
    service_token = create_jwt(User("service:t"), scope="sessions:send", settings=tokens)
    client = await clients().start(a, {"token": user_token})
    await client.say("hello")  # the echo hook runs: its log lines carry the session
    await client.sio.disconnect()
    await asyncio.to_thread(a.process.wait_for_line, f"session {client.session_id} detached")
    resumed = await clients().connect(a, client.resume_auth(token=user_token))
    await resumed.next("replayed")
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
        hook = await http.post(
            f"/hooks/sessions/{client.session_id}/messages",
            json={"content": "hook"},
            headers={"authorization": f"Bearer {service_token}"},
        )
        assert hook.status_code == 202
        # A token in a query string ends up in the access log line, redacted.
        await http.get(f"/custom-auth?access_token={user_token}&resumeToken={client.resume_token}")
        await http.get("/custom-auth", headers={"authorization": f"Bearer {user_token}x"})
    worker = [sys.executable, "-m", "tests.apps.sender", client.session_id, "2"]
    await Process(worker, env={**replica_env, **env}, name="sender").finished()
    await resumed.next("new_message", lambda m: m["output"] == "n=1")
    a.process.stop()

    lines = a.process.lines
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(e["replica"] == "logs-a" and e["level"] and e["logger"] for e in entries)
    assert any(e.get("session") == client.session_id and "detached" in e["message"] for e in entries)
    assert any("access" in e["logger"] and "[redacted]" in e["message"] for e in entries)
    output = "\n".join(lines)
    used = {
        "auth secret": auth_secret,
        "previous secret": previous,
        "webhook secret": webhook_secret,
        "user token": user_token,
        "service token": service_token,
        "first resume token": client.resume_token,
        "second resume token": resumed.resume_token,
    }
    leaked = [name for name, secret in used.items() if secret in output]
    assert not leaked, f"the logs hold the {leaked}"


def test_the_redactor_hides_secrets_and_token_shapes() -> None:
    redact = Redactor(["s3cret-value-123"])
    text = redact(
        "key s3cret-value-123 jwt eyJhbGciOi.eyJzdWIiOi.sig Bearer abc.def whsec_QUJDRA== "
        "GET /x?token=zzz&resumeToken=yyy {'resumeToken': 'qqq'}"
    )
    for secret in ("s3cret-value-123", "eyJhbGciOi", "abc.def", "QUJDRA", "zzz", "yyy", "qqq"):
        assert secret not in text, text


async def test_the_run_wide_search_finds_a_secret_or_a_jwt_in_any_output() -> None:
    """What tests/conftest.py runs over every process when the run ends, against a process that leaks."""
    secret = secrets.token_urlsafe(32)
    harness.SECRETS.add(secret)
    token = create_jwt(User("ann"), settings=Settings(auth_secret=secrets.token_urlsafe(40)))
    code = f"print('key={secret}'); print('url?t={token}&x=1')"
    leaky = Process([sys.executable, "-c", code], name="leaky")
    await leaky.finished()
    quiet = Process([sys.executable, "-c", "print('nothing to see')"], name="quiet")
    await quiet.finished()
    try:
        assert harness.leaks([leaky, quiet]) == ["leaky: a JWT", "leaky: a secret or token of this run"]
    finally:
        leaky.prints_secrets = True  # it leaks on purpose: the end of the run must not count it
