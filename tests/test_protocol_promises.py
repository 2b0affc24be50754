"""Promises of docs/protocol.md, each checked on a real replica with a real Socket.IO client."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import socketio

from bus import Bus, Envelope, Settings, Target
from tests.harness import ChatClient, Replica, start_replica
from web import ContextError, WebsocketSession, runtime, user_session


@pytest.fixture(scope="module")
def chat_prefix() -> str:
    return f"pp{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def chat_replica(redis_url: str, chat_prefix: str) -> Iterator[Replica]:
    env = {"SWITCHBOARD_REDIS_URL": redis_url, "SWITCHBOARD_KEY_PREFIX": chat_prefix}
    replica = start_replica(env, name="protocol")
    yield replica
    replica.process.stop()


@pytest.fixture
async def started(chat_replica: Replica) -> AsyncIterator[ChatClient]:
    client = await ChatClient().start(chat_replica)
    await client.next("new_message", lambda m: m["output"] == f"started {client.session_id}")
    yield client
    await client.close()


async def test_long_polling_is_refused_with_400(chat_replica: Replica) -> None:
    response = await chat_replica.aget(f"{chat_replica.socketio_path}/?EIO=4&transport=polling")
    assert response.status_code == 400


async def test_a_cross_origin_handshake_is_refused_and_the_own_origin_accepted(
    chat_replica: Replica, clients: Callable[[], ChatClient]
) -> None:
    foreign = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await foreign.connect(
            chat_replica.url,
            socketio_path=chat_replica.socketio_path,
            transports=["websocket"],
            headers={"Origin": "http://evil.example"},
            wait_timeout=10,
        )
    assert not foreign.connected
    await foreign.shutdown()
    own = await clients().connect(chat_replica, headers={"Origin": chat_replica.url})
    assert own.session_id


def client_message(output: object, **extra: object) -> dict[str, object]:
    return {"message": {"id": "m-1", "output": output, "type": "user_message", **extra}}


async def test_client_message_limits(started: ChatClient) -> None:
    # Each of these is ignored without a reply, so the echo counter never moves for them.
    for data in [
        client_message("x" * 65_537),  # over 65,536 characters
        client_message(42),  # not a string
        {"message": "hello"},  # not an object
        {"nothing": 1},
        "text",
    ]:
        await started.sio.emit("client_message", data)
    # Exactly 65,536 characters is accepted: the first reply is echo number 1.
    reply = await started.say("y" * 65_536)
    assert reply["output"] == "echo 1: " + "y" * 65_536
    assert (await started.say("ok"))["output"] == "echo 2: ok"
    assert [m["output"][:7] for m in started.received("update_message")] == ["echo 1:", "echo 2:"]


async def test_ack_answers_true_only_for_an_offset_that_was_sent(
    started: ChatClient, chat_replica: Replica
) -> None:
    assert (await chat_replica.aget(f"/hello/{started.session_id}")).status_code == 200
    hello = await started.next("new_message", lambda m: m["output"] == "Hello World")
    sent = hello["offset"]
    n = int(sent.split("-")[0])
    for payload, expected in [
        ({"offset": sent}, True),
        ({"offset": f"{n - 1}-0"}, True),  # below what was acknowledged: still true, nothing changes
        ({"offset": f"{n + 1}-0"}, False),  # never sent
        ({"offset": "abc"}, False),
        ({"offset": 7}, False),
        ({}, False),  # missing
        ("41-0", False),
    ]:
        assert await started.sio.call("ack", payload, timeout=10) is expected, payload


async def test_on_chat_start_runs_once_per_session(started: ChatClient, chat_replica: Replica) -> None:
    await started.sio.emit("connection_successful")  # a second announcement is ignored
    assert (await started.say("after"))["output"] == "echo 1: after"  # the counter was not reset
    assert [m for m in started.outputs() if m.startswith("started")] == [f"started {started.session_id}"]
    # A resumed session never runs it again either.
    await started.sio.disconnect()
    again = await ChatClient().start(chat_replica, started.resume_auth())
    try:
        assert again.session_id == started.session_id
        assert (await again.say("resumed"))["output"] == "echo 2: resumed"
        assert not [m for m in again.outputs() if m.startswith("started")]
    finally:
        await again.close()


async def test_a_hook_exception_sends_the_error_message_before_task_end(started: ChatClient) -> None:
    await started.sio.emit("client_message", client_message("/boom"))
    await started.next("new_message", lambda m: m["output"] == "An internal error occurred.")
    await started.next("task_end")  # on_chat_start's
    await started.next("task_end")  # this run's
    names = [name for name, _ in started.events]
    last_start = len(names) - 1 - names[::-1].index("task_start")
    run = started.events[last_start:]
    assert [name for name, _ in run] == ["task_start", "new_message", "new_message", "task_end"]
    error = run[2][1]
    assert error["output"] == "An internal error occurred." and error["isError"] is True
    assert (error["name"], error["type"], error["streaming"]) == ("Assistant", "assistant_message", False)
    assert run[1][1]["output"] == "about to fail" and run[1][1]["isError"] is False


async def test_reserved_switchboard_events_never_reach_the_client(
    started: ChatClient, redis_url: str, chat_prefix: str
) -> None:
    settings = Settings(redis_url=redis_url, key_prefix=chat_prefix, replica_id="outsider")
    async with Bus(settings) as bus:
        target = Target.session(started.session_id)
        assert await bus.publish(Envelope(target, "switchboard:custom", {"x": 1}, "outsider")) == 1
        await bus.send(Envelope(target, "new_message", {"output": "marker"}, "outsider"))
    await started.next("new_message", lambda m: m["output"] == "marker")
    assert not [name for name, _ in started.events if name.startswith("switchboard:")]


async def test_login_required_without_a_secret_refuses_every_socket(
    replicas: Callable[..., Replica], clients: Callable[[], ChatClient]
) -> None:
    a = replicas(env={"SWITCHBOARD_REQUIRE_LOGIN": "true"})
    refusal = await clients().refused(a, {"token": "anything"})
    assert refusal["data"]["reason"] == "token_not_configured"
    assert refusal["message"] == "authentication is not configured on this server"


# -- direct calls --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [object(), {1: 2}, {"a": [{"b": {3: "c"}}]}, {"s": {1, 2}}, 2**70],
)
def test_user_session_set_refuses_what_msgpack_cannot_carry_with_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="user_session value for 'k'"):
        user_session.set("k", value)


def test_user_session_set_refuses_built_in_keys_and_needs_a_context() -> None:
    with pytest.raises(KeyError, match="built in"):
        user_session.set("id", "x")

    async def outside() -> None:
        user_session.set("k", {"fine": [1, b"2", None]})

    with pytest.raises(ContextError):
        asyncio.run(outside())


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "amqp://127.0.0.1", "127.0.0.1:6379"])
def test_unsupported_bus_url_schemes_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported bus URL scheme"):
        Bus(Settings(redis_url=url))


async def test_emitting_a_reserved_event_name_raises_value_error() -> None:
    async with Bus(Settings()) as bus:
        await bus.registry.create("S" * 24, user=None, thread_id=None, resume_token="t")
        with runtime.bind(bus):
            session = WebsocketSession("S" * 24)
            with pytest.raises(ValueError, match="reserved"):
                await session.emit("switchboard:takeover", {})
            assert (await bus.read_log("S" * 24, "0-0")).entries == []  # nothing was sent
            assert (await session.emit("custom.event", {})).offset == "1-0"
