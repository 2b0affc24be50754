"""Send to chat sessions from processes without a web server: job queues, threads, scripts."""

from workers.client import Client, SyncClient, send_message, session_context

__all__ = ["Client", "SyncClient", "send_message", "session_context"]
