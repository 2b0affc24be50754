"""Chat module used by the tests: counts starts, keeps a per-session counter, streams an echo."""

from tests.apps import counters
from web import Message, on_chat_end, on_chat_start, on_message, user_session
from workers.taskiq_jobs import long_job


@on_chat_start
async def start() -> None:
    counters.chat_starts += 1
    user_session.set("count", 0)
    await Message(f"started {user_session.get('id')}").send()


@on_message
async def echo(message: Message) -> None:
    if message.content.startswith("/job "):
        # A long job for the real job queue: its worker streams progress back into this session.
        await long_job.kiq(user_session.get("id"), message.content.removeprefix("/job "))
        await Message("Job queued").send()
        return
    if message.content == "/boom":
        await Message("about to fail").send()
        raise RuntimeError("a bug in the chat module")
    count = user_session.get("count") + 1
    user_session.set("count", count)
    reply = Message()
    await reply.stream_token(f"echo {count}: ")
    await reply.stream_token(message.content)
    await reply.send()


@on_chat_end
async def end() -> None:
    counters.chat_ends += 1
    print(f"chat ended {user_session.get('id')}", flush=True)
