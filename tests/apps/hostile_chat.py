"""Chat module for the hostile-client tests: hooks that take a while and report overlap."""

import asyncio

from web import Message, on_message

running = 0
most = 0


@on_message
async def handle(message: Message) -> None:
    global running, most
    running += 1
    most = max(most, running)
    try:
        if message.content == "hang":  # a hook that would never end (a stuck call)
            print("hanging", flush=True)
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                print("the hanging hook was cancelled", flush=True)
                raise
        if message.content.startswith("block"):
            try:
                await Message(f"blocking {message.content}").send()
                await asyncio.Event().wait()  # a hook that never finishes by itself
            except asyncio.CancelledError:
                print(f"hook cancelled: {message.content}", flush=True)
                raise
        if message.content.startswith("slow"):
            await asyncio.sleep(0.3)  # a hook that does work (an LLM call, say)
        await Message(f"done {message.content} overlap={most}").send()
    finally:
        running -= 1
