"""The demo chat module: greets each session and streams an echo of every message."""

import asyncio

from web import Message, on_chat_start, on_message, user_session


@on_chat_start
async def start() -> None:
    session_id = user_session.get("id")
    await Message(f"Hello! Your session id is {session_id}.").send()


@on_message
async def echo(message: Message) -> None:
    reply = Message()
    for word in f"You said: {message.content}".split(" "):
        await reply.stream_token(word + " ")
        await asyncio.sleep(0.05)  # pacing for the eye, not synchronisation
    await reply.send()
