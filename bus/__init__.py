"""The Switchboard bus: envelopes, Redis and in-memory transports, and the session registry."""

from bus.core import Bus, BusStats, LogBatch, Receipt
from bus.envelope import Envelope, EnvelopeError, Target, offset_key, valid_offset
from bus.errors import BusUnavailable, SessionNotFound
from bus.keys import Keys
from bus.registry import SessionRecord, SessionRegistry, valid_session_id
from bus.settings import Settings, get_settings

__all__ = [
    "Bus",
    "BusStats",
    "BusUnavailable",
    "Envelope",
    "EnvelopeError",
    "Keys",
    "LogBatch",
    "Receipt",
    "SessionNotFound",
    "SessionRecord",
    "SessionRegistry",
    "Settings",
    "Target",
    "get_settings",
    "offset_key",
    "valid_offset",
    "valid_session_id",
]
