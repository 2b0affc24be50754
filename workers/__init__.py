"""Send to chat sessions from processes without a web server: job queues, threads, scripts."""

from workers.client import send_message, session_context

__all__ = ["send_message", "session_context"]
