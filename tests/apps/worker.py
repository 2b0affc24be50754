"""A plain worker process: `python -m tests.apps.worker SESSION_ID TEXT [sync|async]`."""

import asyncio
import sys

from web import Message
from workers import send_message, session_context


async def send_async(session_id: str, text: str) -> None:
    async with session_context(session_id):
        await Message(text, author="worker").send()


if __name__ == "__main__":
    session_id, text, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "sync":
        send_message(session_id, text, author="worker")
    else:
        asyncio.run(send_async(session_id, text))
    print("sent", flush=True)
