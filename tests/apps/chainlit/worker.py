# A worker process reaching a Chainlit session: `python worker.py SESSION_ID TEXT`, run from this
# directory with the replicas' SWITCHBOARD_ environment.
import asyncio
import json
import sys

import chainlit as cl

from workers import chainlit_context


async def main(session_id: str, text: str) -> None:
    async with chainlit_context(session_id):
        await cl.Message(content=text, author="worker").send()
        message = cl.Message(content="")
        for token in ("from ", "the ", "worker"):
            await message.stream_token(token)
        await message.send()
    print(json.dumps({"sent": session_id}), flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2]))
