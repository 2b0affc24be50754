"""A sending process, driven line by line on stdin; prints one JSON line per command.

`python -m bench.publisher switchboard SESSION_ID`: `workers.Client().send_to_session(...)`, with the
SWITCHBOARD_ environment of the replicas.
`python -m bench.publisher socketio SID`: a write-only `socketio.AsyncRedisManager` emitter
(BENCH_SIO_REDIS_URL, BENCH_SIO_CHANNEL), python-socketio's documented way to emit from outside a server.
(`-` as the session id when every command names its targets.)

Commands:
- `send N K TAG` (bench/delivery.py): N messages with contents TAG0 .. TAG{N-1} to the session id of
  the command line, from K concurrent tasks;
- `rate R SECONDS FILE` (bench/peers.py): R messages/s for SECONDS, round robin over the sessions in
  FILE ("URL SESSION_ID" lines), each stamped with its send time (metadata.t), paced in 10 ms ticks;
- `blast N K FILE`: N such messages as fast as K concurrent tasks can;
- `tokens R SECONDS FILE`: R tokens/s to every session in FILE for SECONDS (one streamed message per
  session: `stream_token` "t<send time>;" each, then the final message); switchboard streams with
  `Message.stream_token` in the session's context, socketio emits `stream_token` events;
- `quit`. It prints `ready` once connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import socketio

from bench.common import now, paced, run, run_senders
from web.message import Message, client_event
from workers import Client

#: send(session id, content, metadata) -> anything
Sender = Callable[[str, str, dict[str, Any] | None], Awaitable[Any]]
#: stream(session ids, tokens per second, seconds) -> tokens sent
Streamer = Callable[[list[str], float, float], Awaitable[int]]


async def stream_paced(
    targets: list[str],
    rate: float,
    seconds: float,
    streamer: Callable[[int], contextlib.AbstractAsyncContextManager[Callable[[str], Awaitable[Any]]]],
) -> int:
    """`rate` tokens/s to each target for `seconds`, their schedules spread over 1/rate, in 10 ms
    ticks. Each target has one task that streams its tokens one after the other (awaited), within
    one `streamer(i)` (a session's context, for Switchboard) for the whole stream; a target whose
    previous tokens are still being sent gets the ones due meanwhile in one go."""
    schedule = [(i / len(targets) / rate, i) for i in range(len(targets))]
    heapq.heapify(schedule)
    due = [0] * len(targets)
    wake = [asyncio.Event() for _ in targets]
    done = False
    sent = 0

    async def stream(i: int) -> None:
        nonlocal sent
        async with streamer(i) as token:
            while not (done and not due[i]):
                await wake[i].wait()
                wake[i].clear()
                while due[i]:
                    due[i] -= 1
                    await token(f"t{now()!r};")
                    sent += 1

    tasks = [asyncio.create_task(stream(i)) for i in range(len(targets))]
    start = now()
    while (elapsed := now() - start) < seconds:
        while schedule and schedule[0][0] <= elapsed:
            at, i = heapq.heappop(schedule)
            heapq.heappush(schedule, (at + 1 / rate, i))
            due[i] += 1
            wake[i].set()
        await asyncio.sleep(0.01)
    done = True
    for event in wake:
        event.set()
    await asyncio.gather(*tasks)
    return sent


@contextlib.asynccontextmanager
async def switchboard_sender() -> AsyncIterator[tuple[Sender, Streamer]]:
    async with Client() as client:

        async def send(session_id: str, content: str, metadata: dict[str, Any] | None) -> Any:
            return await client.send_to_session(session_id, content, metadata=metadata)

        async def stream(targets: list[str], rate: float, seconds: float) -> int:
            @contextlib.asynccontextmanager
            async def streamer(i: int) -> AsyncIterator[Callable[[str], Awaitable[Any]]]:
                # One streamed message per session, in its context for the whole stream.
                async with client.session(targets[i]):
                    message = Message()
                    yield message.stream_token
                    await message.send()

            return await stream_paced(targets, rate, seconds, streamer)

        yield send, stream


@contextlib.asynccontextmanager
async def socketio_sender() -> AsyncIterator[tuple[Sender, Streamer]]:
    emitter = socketio.AsyncRedisManager(
        os.environ["BENCH_SIO_REDIS_URL"],
        channel=os.environ.get("BENCH_SIO_CHANNEL", "socketio"),
        write_only=True,
    )

    async def send(sid: str, content: str, metadata: dict[str, Any] | None) -> Any:
        return await emitter.emit("new_message", client_event(content, metadata=metadata)[1], to=sid)

    async def stream(targets: list[str], rate: float, seconds: float) -> int:
        @contextlib.asynccontextmanager
        async def streamer(i: int) -> AsyncIterator[Callable[[str], Awaitable[Any]]]:
            async def token(text: str) -> None:
                payload = {"id": f"s{i}", "token": text, "isSequence": False, "isInput": False}
                await emitter.emit("stream_token", payload, to=targets[i])

            yield token

        return await stream_paced(targets, rate, seconds, streamer)

    try:
        yield send, stream
    finally:
        if emitter.redis is not None:
            await emitter.redis.aclose()


def read_targets(path: str) -> list[str]:
    with open(path) as lines:
        return [line.split()[-1] for line in lines if line.strip()]


async def main(mode: str, target: str) -> None:
    opened = switchboard_sender() if mode == "switchboard" else socketio_sender()
    async with opened as (send, stream):
        print("ready", flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            command = line.split()
            if not command or command[0] == "quit":
                break
            result: dict[str, Any]
            if command[0] == "send":
                n, k, tag = int(command[1]), int(command[2]), command[3]

                async def one(i: int, tag: str = tag) -> Any:
                    return await send(target, f"{tag}{i}", None)

                result = await run_senders(n, k, one)
            elif command[0] in ("rate", "blast"):
                targets = read_targets(command[3])

                async def stamped(i: int, targets: list[str] = targets) -> Any:
                    return await send(targets[i % len(targets)], f"m{i}", {"t": now()})

                if command[0] == "rate":
                    result = await paced(float(command[1]), float(command[2]), stamped)
                else:
                    result = await run_senders(int(command[1]), int(command[2]), stamped)
            elif command[0] == "tokens":
                started = now()
                sent = await stream(read_targets(command[3]), float(command[1]), float(command[2]))
                result = {"sent": sent, "seconds": now() - started}
            else:
                result = {"error": f"unknown command {command[0]!r}"}
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("switchboard", "socketio"):
        sys.exit(__doc__)
    run(main(sys.argv[1], sys.argv[2]))
