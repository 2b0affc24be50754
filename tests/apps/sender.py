"""A worker that sends numbered messages to one session and reports its receipts.

`python -m tests.apps.sender SESSION_ID COUNT [PAUSE_AT]`: sends `n=0` .. `n=COUNT-1`; after
PAUSE_AT messages it prints "paused" and waits for a line on stdin. Prints one JSON line at the end:
{"statuses": [...]}; `ask` mode: `python -m tests.apps.sender SESSION_ID ask TIMEOUT` prints the answer;
`ask2 FIRST SECOND` asks twice in a row and prints each answer.
"""

import asyncio
import json
import sys

from bus import EnvelopeError
from web import AskUserMessage, Message, get_context
from workers import session_context


async def send(session_id: str, count: int, pause_at: int | None) -> None:
    statuses = []
    async with session_context(session_id):
        for n in range(count):
            if n == pause_at:
                print("paused", flush=True)
                await asyncio.to_thread(sys.stdin.readline)
            message = Message(f"n={n}")
            receipt = await get_context().emit("new_message", message.to_dict())
            assert receipt is not None
            statuses.append(receipt.status)
    print(json.dumps({"statuses": statuses}), flush=True)


async def oversized(session_id: str) -> None:
    async with session_context(session_id):
        await Message("before").send()
        try:
            await Message("x" * 2_000_000).send()
        except EnvelopeError as exc:
            print(f"refused: {exc}", flush=True)
        await Message("after").send()


async def ask(session_id: str, timeout: float) -> None:
    async with session_context(session_id):
        print("asking", flush=True)
        answer = await AskUserMessage("What is your name?", timeout=timeout).send()
    print(json.dumps({"answer": answer}), flush=True)


async def ask_twice(session_id: str, first: float, second: float) -> None:
    """Ask once (`first` s), print the result, then ask again (`second` s) and print that too."""
    for timeout in (first, second):
        async with session_context(session_id):
            answer = await AskUserMessage(f"Question for {timeout} s?", timeout=timeout).send()
        print(json.dumps({"answer": answer}), flush=True)


if __name__ == "__main__":
    session, mode = sys.argv[1], sys.argv[2]
    if mode == "ask":
        asyncio.run(ask(session, float(sys.argv[3])))
    elif mode == "ask2":
        asyncio.run(ask_twice(session, float(sys.argv[3]), float(sys.argv[4])))
    elif mode == "oversized":
        asyncio.run(oversized(session))
    else:
        asyncio.run(send(session, int(mode), int(sys.argv[3]) if len(sys.argv) > 3 else None))
