"""Across real processes: a socket on one uvicorn replica, sends from another replica or a worker."""

import asyncio
import sys
from collections.abc import Callable

from tests.harness import ChatClient, Process, Replica, start_replica


async def test_hello_on_replica_b_reaches_a_socket_on_replica_a_20_of_20(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a, b = replicas(), replicas()
    client = await clients().start(a)
    await client.next("new_message", lambda m: m["output"].startswith("started"))
    for _ in range(20):
        response = await b.aget(f"/hello/{client.session_id}")
        assert response.status_code == 200, response.text
        await client.next("new_message", lambda m: m["output"] == "Hello World")
    assert len(client.received("new_message")) == 21


async def test_worker_processes_deliver(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient], replica_env: dict[str, str]
) -> None:
    a = replicas()
    client = await clients().connect(a)
    for mode in ("sync", "async"):
        worker = Process(
            [sys.executable, "-m", "tests.apps.worker", client.session_id, f"from {mode} worker", mode],
            env=replica_env,
            name=f"{mode}-worker",
        )
        assert await asyncio.to_thread(worker.proc.wait, 30) == 0, worker.output()
        message = await client.next("new_message", lambda m, mode=mode: m["output"] == f"from {mode} worker")
        assert message["name"] == "worker"


async def test_worker_to_unknown_session_fails_loudly(replica_env: dict[str, str]) -> None:
    worker = Process(
        [sys.executable, "-m", "tests.apps.worker", "U" * 24, "hello", "sync"],
        env=replica_env,
        name="worker",
    )
    assert await asyncio.to_thread(worker.proc.wait, 30) != 0
    assert "SessionNotFound" in worker.output()


async def test_resume_on_another_replica_keeps_the_session(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a, b = replicas(), replicas()
    first = await clients().start(a)
    await first.next("new_message", lambda m: m["output"].startswith("started"))
    assert (await first.say("one"))["output"] == "echo 1: one"
    session_id, token = first.session_id, first.resume_token
    await first.close()

    second = await clients().connect(b, first.resume_auth())
    await second.sio.emit("connection_successful")
    assert second.session_id == session_id
    assert second.resume_token != token  # the token rotates on every resume
    # The custom user_session key followed the session to replica B.
    assert (await second.say("two"))["output"] == "echo 2: two"
    assert (await b.aget("/stats")).json()["chat_starts"] == 0
    assert not [m for m in second.received("new_message") if m["output"].startswith("started")]

    # A send made through replica A now reaches the socket on replica B.
    assert (await a.aget(f"/hello/{session_id}")).status_code == 200
    await second.next("new_message", lambda m: m["output"] == "Hello World")


async def test_the_resume_token_rotates_the_old_one_opens_a_new_session_the_new_one_resumes(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a, b = replicas(), replicas()
    first = await clients().connect(a)
    old_token = first.resume_token
    second = await clients().connect(b, first.resume_auth())
    assert second.session_id == first.session_id and second.resume_token != old_token
    await first.next("disconnect")  # taken over: the session lives on B under the new token
    # The token the first socket had was used up by the resume: it opens a new session instead.
    stale = await clients().connect(a, {"sessionId": first.session_id, "resumeToken": old_token})
    assert stale.session_id != first.session_id
    # The rotated token is the one that resumes (and takes the session over from B).
    third = await clients().connect(a, {"sessionId": second.session_id, "resumeToken": second.resume_token})
    assert third.session_id == first.session_id
    await second.next("session_replaced")


async def test_a_valid_resume_takes_over_the_live_socket_on_another_replica(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a, b = replicas(), replicas()
    first = await clients().connect(a)
    second = await clients().connect(b, {"sessionId": first.session_id, "resumeToken": first.resume_token})
    assert second.session_id == first.session_id
    replaced = await first.next("session_replaced")
    assert "another connection" in replaced["reason"]
    await first.next("disconnect")
    assert (await a.aget("/stats")).json()["sessions"] == 0
    # A gave the session up: it no longer takes the session's messages off Redis. A newcomer on A is
    # sent a marker after the hello; A's listener handles its messages in publish order, so once the
    # newcomer has the marker, A would have counted the hello too had it stayed subscribed.
    newcomer = await clients().connect(a)
    before = (await a.aget("/stats")).json()["received"]
    assert (await a.aget(f"/hello/{second.session_id}")).status_code == 200
    assert (await b.aget(f"/say/{newcomer.session_id}/marker")).status_code == 200
    await second.next("new_message", lambda m: m["output"] == "Hello World")
    await newcomer.next("new_message", lambda m: m["output"] == "marker")
    assert (await a.aget("/stats")).json()["received"] == before + 1  # the marker only
    assert second.outputs() == ["Hello World"]


async def test_a_resume_on_the_same_replica_replaces_the_old_socket(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = replicas()
    first = await clients().connect(a)
    second = await clients().connect(a, {"sessionId": first.session_id, "resumeToken": first.resume_token})
    await first.next("session_replaced")
    await first.next("disconnect")
    assert (await a.aget(f"/hello/{first.session_id}")).status_code == 200
    await second.next("new_message", lambda m: m["output"] == "Hello World")
    assert (await a.aget("/stats")).json()["sessions"] == 1


async def test_session_id_without_the_right_token_gets_a_new_session(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a, b = replicas(), replicas()
    owner = await clients().connect(a)
    for auth in ({"sessionId": owner.session_id}, {"sessionId": owner.session_id, "resumeToken": "guess"}):
        intruder = await clients().connect(b, auth)
        assert intruder.session_id != owner.session_id
        await intruder.close()
    assert not owner.received("session_replaced")
    assert (await b.aget(f"/hello/{owner.session_id}")).status_code == 200
    await owner.next("new_message", lambda m: m["output"] == "Hello World")


async def test_unknown_session_is_404_json_on_every_replica(
    replicas: Callable[..., Replica],
) -> None:
    a, b = replicas(), replicas()
    for replica in (a, b):
        for session_id in ("U" * 24, "not-a-session-id-at-all!"):
            response = await replica.aget(f"/hello/{session_id}")
            assert response.status_code == 404
            assert response.json() == {"detail": "session not found", "sessionId": session_id}


async def test_built_in_keys_work_remotely_and_custom_keys_fail_clearly(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a, b = replicas(), replicas()
    client = await clients().start(a, {"threadId": "thread-7"})
    await client.next("new_message", lambda m: m["output"].startswith("started"))
    remote = (await b.aget(f"/say/{client.session_id}/hi")).json()
    assert remote["thread"] == "thread-7" and remote["user"] is None
    message = await client.next("new_message", lambda m: m["output"] == "hi")
    assert message["threadId"] == "thread-7" and message["id"] == remote["id"]
    assert (await a.aget(f"/custom/{client.session_id}")).json() == {"count": 0, "error": None}
    custom = (await b.aget(f"/custom/{client.session_id}")).json()
    assert custom["count"] is None and "only available in the process holding" in custom["error"]


async def test_disconnected_session_ends_after_its_grace_period_and_the_heartbeat_keeps_a_live_one(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    # Grace 3 s, heartbeat every 1 s: a loaded machine may delay a beat by up to 2 s without a loss.
    a = replicas(env={"SWITCHBOARD_SESSION_GRACE_SECONDS": "3"})
    kept = await clients().connect(a)
    client = await clients().start(a)
    await client.next("new_message", lambda m: m["output"].startswith("started"))
    session_id = client.session_id
    await client.close()
    await asyncio.to_thread(a.process.wait_for_line, f"session {session_id} detached")
    # Within the grace period the session is still addressable (the send is queued in its log).
    assert (await a.aget(f"/hello/{session_id}")).status_code == 200
    await asyncio.to_thread(a.process.wait_for_line, f"chat ended {session_id}", 30)
    assert (await a.aget(f"/hello/{session_id}")).status_code == 404
    assert (await a.aget("/stats")).json()["chat_ends"] == 1
    # `kept` was attached before `client` detached, so more than a grace period has passed since its
    # registry entry was last written: only the heartbeat kept it alive.
    assert (await a.aget(f"/hello/{kept.session_id}")).status_code == 200
    await kept.next("new_message", lambda m: m["output"] == "Hello World")


async def test_an_expired_sessions_id_and_token_give_a_new_session(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = replicas(env={"SWITCHBOARD_SESSION_GRACE_SECONDS": "1"})
    client = await clients().connect(a)
    await client.close()
    await asyncio.to_thread(a.process.wait_for_line, f"chat ended {client.session_id}", 30)
    again = await clients().connect(a, client.resume_auth())
    assert again.session_id != client.session_id
    assert (await a.aget(f"/hello/{client.session_id}")).status_code == 404  # the old one stays gone


async def test_uvicorn_with_two_workers_delivers_12_of_12(
    replica_env: dict[str, str], clients: Callable[[], ChatClient]
) -> None:
    replica = start_replica(replica_env, workers=2, name="two-workers")
    try:
        sockets = [await clients().connect(replica) for _ in range(3)]
        for _round in range(4):
            for client in sockets:
                assert (await replica.aget(f"/hello/{client.session_id}")).status_code == 200
                await client.next("new_message", lambda m: m["output"] == "Hello World")
        assert sum(len(c.received("new_message")) for c in sockets) == 12
    finally:
        replica.process.stop()


async def test_update_and_remove_reach_a_remote_socket(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a, b = replicas(), replicas()
    client = await clients().connect(a)
    message_id = (await b.aget(f"/edit/{client.session_id}")).json()["id"]
    assert (await client.next("new_message"))["output"] == "draft"
    updated = await client.next("update_message")
    assert updated["id"] == message_id and updated["output"] == "final"
    assert (await client.next("delete_message"))["id"] == message_id
    order = [name for name, _ in client.events if name.endswith("_message")]
    assert order == ["new_message", "update_message", "delete_message"]
