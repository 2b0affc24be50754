"""Send to chat sessions from processes without a web server: job queues, threads, scripts."""

from workers.chainlit_bus import chainlit_context
from workers.client import Client, SyncClient, send_message, session_context

__all__ = ["Client", "SyncClient", "chainlit_context", "send_message", "session_context"]
