# The seed's chat module, verbatim but for the import line.
import web as cl  # import chainlit as cl


@cl.on_chat_start
async def main():
    print("Session id:", cl.user_session.get("id"), flush=True)
    await cl.Message(content=f"Hello from session {cl.user_session.get('id')}").send()


@cl.on_message
async def on_message(message: cl.Message):
    await cl.Message(content=f"Received: {message.content}").send()
