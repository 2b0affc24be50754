# The seed's chat module with the real Chainlit, verbatim; login is on when CHAINLIT_AUTH_SECRET is set.
import os

import chainlit as cl


@cl.on_chat_start
async def main():
    print("Session id:", cl.user_session.get("id"), flush=True)
    await cl.Message(content=f"Hello from session {cl.user_session.get('id')}").send()


@cl.on_message
async def on_message(message: cl.Message):
    await cl.Message(content=f"Received: {message.content}").send()


if os.environ.get("CHAINLIT_AUTH_SECRET"):

    @cl.password_auth_callback
    def auth_callback(username: str, password: str):
        if password == "secret":
            return cl.User(identifier=username)
        return None
