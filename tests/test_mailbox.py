"""Nothing lost: replay after reconnect, replica crash and subscription loss; asks across processes."""

import asyncio
import json
import sys
from collections.abc import Callable

import msgpack
import redis.asyncio as redis

from bus import Bus, Envelope, Settings, Target
from tests.harness import ChatClient, Process, Replica
from web import User, create_jwt

N = 1000


def numbered(client: ChatClient) -> list[int]:
    return [int(o[2:]) for o in client.outputs() if o.startswith("n=")]


def sender(env: dict[str, str], *args: object) -> Process:
    argv = [sys.executable, "-m", "tests.apps.sender", *map(str, args)]
    return Process(argv, env=env, name="sender", stdin=True)


async def test_replica_killed_midway_client_resumes_elsewhere_with_all_1000_in_order(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    a, b = replicas(), replicas()
    client = await clients().connect(a)
    worker = sender(replica_env, client.session_id, N, N // 2)
    await asyncio.to_thread(worker.wait_for_line, "paused")
    await client.next("new_message", lambda m: m["output"] == "n=300")
    a.process.kill()  # SIGKILL: no goodbye, no registry update
    await client.next("disconnect")
    worker.tell("go")  # the second half is sent while the session has no socket anywhere
    await client.sio.disconnect()
    await client.connect(b, client.resume_auth())
    await worker.finished()
    await client.next("new_message", lambda m: m["output"] == f"n={N - 1}")
    assert numbered(client) == list(range(N))
    assert "queued" in worker.last_json()["statuses"]


async def test_client_away_gets_everything_and_receipts_say_queued(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    a = replicas()
    client = await clients().connect(a)
    worker = sender(replica_env, client.session_id, N, N // 2)
    await asyncio.to_thread(worker.wait_for_line, "paused")
    await client.next("new_message", lambda m: m["output"] == f"n={N // 2 - 1}")
    await client.sio.disconnect()
    await asyncio.to_thread(a.process.wait_for_line, f"session {client.session_id} detached")
    worker.tell("go")
    await worker.finished()  # all 500 were sent while the client was away
    statuses = worker.last_json()["statuses"]
    assert statuses[: N // 2] == ["delivered"] * (N // 2)
    assert statuses[N // 2 :] == ["queued"] * (N // 2)
    await client.connect(a, client.resume_auth())
    replayed = await client.next("replayed")
    assert replayed == {"count": N // 2}
    assert numbered(client) == list(range(N))


async def test_killing_the_pubsub_connection_mid_stream_loses_nothing(
    replicas: Callable[..., Replica],
    clients: Callable[[], ChatClient],
    replica_env: dict[str, str],
    redis_url: str,
) -> None:
    a = replicas()
    client = await clients().connect(a)
    worker = sender(replica_env, client.session_id, N, 200)
    await asyncio.to_thread(worker.wait_for_line, "paused")
    admin = redis.Redis.from_url(redis_url)
    before = (await a.aget("/stats")).json()["reconnects"]
    worker.tell("go")
    assert await admin.client_kill_filter(_type="pubsub") >= 1
    await admin.aclose()
    await worker.finished()
    await client.next("new_message", lambda m: m["output"] == f"n={N - 1}")
    assert numbered(client) == list(range(N))
    assert (await a.aget("/stats")).json()["reconnects"] > before


async def test_offset_older_than_the_log_is_reported_before_what_is_left(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    env = {"SWITCHBOARD_SESSION_LOG_LENGTH": "50"}
    a = replicas(env=env)
    client = await clients().connect(a)
    first = sender({**replica_env, **env}, client.session_id, 1)
    await first.finished()
    await client.next("new_message", lambda m: m["output"] == "n=0")
    await client.sio.disconnect()
    rest = sender({**replica_env, **env}, client.session_id, 400)
    await rest.finished()
    await client.connect(a, client.resume_auth())
    truncated = await client.next("replay_truncated")
    assert truncated["requestedOffset"] == "1-0"
    first_kept = int(truncated["firstOffset"].split("-")[0])
    assert 2 < first_kept and 401 - first_kept + 1 >= 50  # trimmed to about 50 (MAXLEN ~)
    await client.next("replayed")
    names = [name for name, _ in client.events]
    resumed = len(names) - 1 - names[::-1].index("session")  # the resume's `session` event
    after = names[resumed:]
    # Before the FIRST replayed event, not merely before some later one.
    assert after.index("replay_truncated") < after.index("new_message"), after[:5]
    # What is left arrives in order: the tail of the 400 (offsets 2-0 .. 401-0 carry n=0 .. 399).
    assert numbered(client)[1:] == list(range(first_kept - 2, 400))


async def test_acknowledged_offset_is_where_a_resume_without_last_offset_starts(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    a = replicas()
    client = await clients().connect(a)
    await sender(replica_env, client.session_id, 10).finished()
    await client.next("new_message", lambda m: m["output"] == "n=9")
    await client.ack()
    await client.sio.disconnect()
    await sender(replica_env, client.session_id, 3).finished()
    again = await clients().connect(a, {"sessionId": client.session_id, "resumeToken": client.resume_token})
    assert (await again.next("replayed"))["count"] == 3
    assert again.outputs() == ["n=0", "n=1", "n=2"]


async def test_oversized_message_is_refused_and_others_keep_flowing(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    a = replicas()
    client = await clients().connect(a)
    worker = sender(replica_env, client.session_id, "oversized")
    await worker.finished()
    assert "refused: envelope of" in worker.output() and "SWITCHBOARD_MAX_ENVELOPE_BYTES" in worker.output()
    await client.next("new_message", lambda m: m["output"] == "after")
    assert client.outputs() == ["before", "after"]


async def test_worker_process_asks_and_the_user_answers(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    a = replicas()
    client = await clients().connect(a)
    worker = sender(replica_env, client.session_id, "ask", 30)
    question = await client.next("ask")
    assert question["msg"]["output"] == "What is your name?" and question["spec"]["type"] == "text"
    assert 0 < question["spec"]["timeout"] <= 30
    client.answer("Ann")
    await worker.finished()
    assert worker.last_json() == {"answer": {"output": "Ann"}}
    await client.next("clear_ask")


async def test_unanswered_question_times_out_and_a_late_answer_is_ignored(
    replicas: Callable[..., Replica],
    clients: Callable[[], ChatClient],
    replica_env: dict[str, str],
    settings: Callable[..., Settings],
) -> None:
    a = replicas()
    client = await clients().connect(a)
    # The worker asks a first question (4 s), then, once it timed out, a second one (60 s).
    worker = sender(replica_env, client.session_id, "ask2", 4, 60)
    first = await client.next("ask")
    async with Bus(settings(replica_id="observer")) as bus:
        # The first question's correlation id, from the session's open questions in Redis.
        asks = await bus.store.hash_get(bus.keys.session_asks(client.session_id)) or {}
        step = first["spec"]["step_id"]
        (correlation,) = [
            c for c, packed in asks.items() if msgpack.unpackb(packed)["spec"]["step_id"] == step
        ]
        relayed: asyncio.Queue[Envelope] = asyncio.Queue()

        async def on_reply(envelope: Envelope, offset: str, epoch: str) -> None:
            await relayed.put(envelope)

        await bus.subscribe(Target("reply", correlation), on_reply)
        await client.next("ask_timeout")
        second = await client.next("ask")  # the worker is now waiting for the second answer
        assert second["spec"]["step_id"] != first["spec"]["step_id"]
        client.answer("too late")  # the first question's acknowledgement, after its timeout
        late = await asyncio.wait_for(relayed.get(), 10)  # the late answer really reached the bus
        assert late.payload == {"answer": {"output": "too late"}}
    client.answer("Bea")
    await worker.finished()
    # The late answer was neither the first question's result nor taken for the second's.
    assert [json.loads(line) for line in worker.lines if line.startswith("{")] == [
        {"answer": None},
        {"answer": {"output": "Bea"}},
    ]
    await client.next("clear_ask")
    assert len(client.received("clear_ask")) == 1  # only the second question was answered


async def test_question_follows_the_socket_to_another_replica(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    a, b = replicas(), replicas()
    first = await clients().connect(a)
    worker = sender(replica_env, first.session_id, "ask", 30)
    asked = await first.next("ask")
    await first.sio.disconnect()
    second = await clients().connect(b, first.resume_auth())
    again = await second.next("ask")
    assert again["spec"]["step_id"] == asked["spec"]["step_id"]
    second.answer("Bea")
    await worker.finished()
    assert worker.last_json() == {"answer": {"output": "Bea"}}


async def test_http_context_send_lands_in_the_thread_history(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = replicas(env={"SWITCHBOARD_DATA_PERSISTENCE": "true"})
    assert (await a.aget("/http-thread/thread-42/first")).status_code == 200
    assert (await a.aget("/http-thread/thread-42/second")).status_code == 200
    client = await clients().connect(a, {"threadId": "thread-42"})
    history = await client.next("thread_history")
    assert history["threadId"] == "thread-42"
    assert [(e["event"], e["message"]["output"]) for e in history["events"]] == [
        ("new_message", "first"),
        ("new_message", "second"),
    ]
    assert all(e["message"]["threadId"] == "thread-42" for e in history["events"])


async def test_a_thread_history_is_only_given_to_its_owner(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    secret = "t" * 48
    a = replicas(env={"SWITCHBOARD_DATA_PERSISTENCE": "true", "SWITCHBOARD_AUTH_SECRET": secret})
    tokens = Settings(auth_secret=secret)
    ann = {"Authorization": f"Bearer {create_jwt(User('ann'), settings=tokens)}"}
    assert (await a.aget("/http-thread-as/ann-thread/private", headers=ann)).status_code == 200
    bob = await clients().connect(
        a, {"threadId": "ann-thread", "token": create_jwt(User("bob"), settings=tokens)}
    )
    owner = await clients().connect(
        a, {"threadId": "ann-thread", "token": create_jwt(User("ann"), settings=tokens)}
    )
    history = await owner.next("thread_history")
    assert [e["message"]["output"] for e in history["events"]] == ["private"]
    # bob's connect finished before ann's (same replica, in order): no history came to bob, and his
    # session got a thread of its own, so what he sends cannot land in ann's.
    said = (await a.aget(f"/say/{bob.session_id}/marker")).json()
    await bob.next("new_message", lambda m: m["output"] == "marker")
    assert not bob.received("thread_history") and said["thread"] != "ann-thread"
