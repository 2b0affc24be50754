"""The demo chat module: greets each session, streams an echo of every message, and asks on `/ask`."""

import asyncio

from web import AskUserMessage, Message, on_chat_start, on_message, user_session


@on_chat_start
async def start() -> None:
    session_id = user_session.get("id")
    await Message(
        f"Hello! Your session id is {session_id}. Type anything and it is echoed back word by word; "
        "type /ask to be asked a question."
    ).send()


@on_message
async def echo(message: Message) -> None:
    if message.content.strip() == "/ask":
        await ask_name()
        return
    reply = Message()
    for word in f"You said: {message.content}".split(" "):
        await reply.stream_token(word + " ")
        await asyncio.sleep(0.05)  # pacing for the eye, not synchronisation
    await reply.send()


async def ask_name() -> None:
    answer = await AskUserMessage(content="What is your name?", timeout=30).send()
    if answer is None:
        await Message("No answer within 30 seconds; type /ask to try again.").send()
    else:
        await Message(f"Nice to meet you, {answer['output']}!").send()
