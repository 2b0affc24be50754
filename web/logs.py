"""Structured logs: with `SWITCHBOARD_LOG_FORMAT=json`, one JSON object per line on the app's handlers.

Each line has `ts` (Unix seconds), `level`, `logger`, `message`, `replica`, and `session` and `envelope`
when the line is about one (the task's `bus.trace` context, or a session id named in the message), plus
`exception` for tracebacks. Never a token, resume token or secret: the configured secrets, anything
shaped like a JWT or a `whsec_` secret, bearer credentials, and `token=`/`secret=`-like query
parameters are replaced by `[redacted]` in the message and the traceback.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable

from bus import Settings, trace

REDACTED = "[redacted]"
_PATTERNS = [
    (re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),  # JWT
    (re.compile(r"whsec_[A-Za-z0-9+/=]+"), REDACTED),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1" + REDACTED),
    (
        re.compile(r"(?i)((?:access_|resume_?)?token|secret|password|auth)=([^&\s\"']+)"),
        r"\1=" + REDACTED,
    ),
    (re.compile(r"(?i)(['\"]resumeToken['\"]\s*:\s*['\"])[^'\"]+"), r"\1" + REDACTED),
]
_SESSION = re.compile(r"\bsession ([A-Za-z0-9_-]{16,64})\b")
#: Loggers whose handlers get the JSON format (besides the root's): uvicorn's own, which do not propagate.
_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


class Redactor:
    def __init__(self, secrets: Iterable[str | None]) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


class JsonFormatter(logging.Formatter):
    def __init__(self, replica: str, redact: Redactor) -> None:
        super().__init__()
        self.replica = replica
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        message = self.redact(record.getMessage())
        entry: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "replica": self.replica,
        }
        session = getattr(record, "session_id", None) or trace.session_id.get()
        if session is None and (named := _SESSION.search(message)) is not None:
            session = named.group(1)
        if session is not None:
            entry["session"] = session
        if (envelope := getattr(record, "envelope_id", None) or trace.envelope_id.get()) is not None:
            entry["envelope"] = envelope
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def use_json(settings: Settings) -> None:
    """Give every handler of the root and uvicorn loggers the JSON format (a stderr handler on the
    root logger if it has none, at INFO for `switchboard`)."""
    redact = Redactor([settings.auth_secret, *settings.auth_previous_secrets, *settings.webhook_secrets])
    formatter = JsonFormatter(settings.replica_id, redact)
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
        logging.getLogger("switchboard").setLevel(logging.INFO)
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(formatter)
